//! The CMOS's snapshot state: the selected register and the 128-byte NVRAM, versioned and
//! checked. The clock registers read the host's wall clock and are not state; the clock
//! is given again on restore.

use serde::{Deserialize, Serialize};

use super::{Cmos, WallClock, REG_STATUS_A, REG_STATUS_C, REG_STATUS_D, STATUS_D_VALID};
use crate::persist::{check_version, unversioned, Persist, PersistError};

/// Format version of [`CmosState`].
pub const CMOS_STATE_VERSION: u32 = 1;
const DEVICE: &str = "CMOS";
/// Bytes of NVRAM (registers 0x00-0x7f).
pub const NVRAM_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmosState {
    #[serde(default = "unversioned")]
    pub version: u32,
    /// The register the guest selected (bit 7, the NMI mask, is not kept).
    pub index: u8,
    pub nvram: Vec<u8>,
}

/// What the host gives a restored CMOS: its wall clock.
pub struct CmosArgs {
    pub clock: fn() -> WallClock,
}

fn invalid(reason: String) -> PersistError {
    PersistError::Invalid {
        device: DEVICE,
        reason,
    }
}

impl CmosState {
    /// Refuses another format version, a selected register or NVRAM the CMOS never has
    /// (the read-only status registers as the guest cannot change them).
    pub fn validate(&self) -> Result<(), PersistError> {
        check_version(DEVICE, self.version, CMOS_STATE_VERSION)?;
        self.nvram_array()?;
        if self.index & 0x80 != 0 {
            return Err(invalid(format!(
                "selected register {:#04x} is beyond the NVRAM",
                self.index
            )));
        }
        let reg = |r: u8| self.nvram.get(usize::from(r)).copied().unwrap_or(0);
        if reg(REG_STATUS_A) & 0x80 != 0 {
            return Err(invalid("status A has update-in-progress set".into()));
        }
        if reg(REG_STATUS_C) != 0 || reg(REG_STATUS_D) != STATUS_D_VALID {
            return Err(invalid(format!(
                "status C {:#04x} / D {:#04x} are not the CMOS's (0x00 / {STATUS_D_VALID:#04x})",
                reg(REG_STATUS_C),
                reg(REG_STATUS_D)
            )));
        }
        Ok(())
    }

    fn nvram_array(&self) -> Result<[u8; NVRAM_LEN], PersistError> {
        self.nvram.as_slice().try_into().map_err(|_| {
            invalid(format!(
                "{} bytes of NVRAM where {NVRAM_LEN} are expected",
                self.nvram.len()
            ))
        })
    }
}

impl Persist for Cmos {
    type State = CmosState;
    type ConstructorArgs = CmosArgs;
    type Error = PersistError;

    fn save(&self) -> CmosState {
        CmosState {
            version: CMOS_STATE_VERSION,
            index: self.index,
            nvram: self.nvram.to_vec(),
        }
    }

    fn restore(args: CmosArgs, state: &CmosState) -> Result<Self, PersistError> {
        state.validate()?;
        Ok(Cmos {
            index: state.index,
            nvram: state.nvram_array()?,
            clock: args.clock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusDevice;

    fn args() -> CmosArgs {
        CmosArgs {
            clock: || WallClock::from_unix(0),
        }
    }

    fn saved() -> CmosState {
        let mut c = Cmos::with_clock(64 << 20, 0, args().clock);
        c.write(0, &[0x40]);
        c.write(1, &[0x99]);
        c.save()
    }

    #[test]
    fn save_restore_save_is_the_same_state() {
        let state = saved();
        let json = serde_json::to_vec(&state).unwrap();
        let back: CmosState = serde_json::from_slice(&json).unwrap();
        let mut r = Cmos::restore(args(), &back).unwrap();
        assert_eq!(r.save(), state);
        assert_eq!(state.index, 0x40);
        let mut b = [0u8];
        r.read(1, &mut b);
        assert_eq!(b[0], 0x99);
    }

    #[test]
    fn a_state_without_a_version_is_read_as_version_1() {
        let mut json = serde_json::to_value(saved()).unwrap();
        json.as_object_mut().unwrap().remove("version");
        let back: CmosState = serde_json::from_value(json).unwrap();
        assert_eq!(back, saved());
    }

    /// Makes a saved state hostile.
    type Spoil = fn(&mut CmosState);

    #[test]
    fn hostile_states_are_refused_with_the_reason() {
        let cases: [(Spoil, &str); 6] = [
            (|s| s.version = 7, "version 7"),
            (|s| s.nvram.push(0), "129 bytes of NVRAM"),
            (|s| s.nvram.clear(), "0 bytes of NVRAM"),
            (|s| s.index = 0x80, "selected register 0x80"),
            (|s| s.nvram[0x0a] |= 0x80, "update-in-progress"),
            (|s| s.nvram[0x0d] = 0, "status C"),
        ];
        for (spoil, reason) in cases {
            let mut s = saved();
            spoil(&mut s);
            let err = Cmos::restore(args(), &s).map(|_| ()).unwrap_err();
            assert!(err.to_string().contains(reason), "{err} / {reason}");
        }
    }
}
