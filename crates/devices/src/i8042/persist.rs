//! The i8042 controller's snapshot state: status, output queue, configuration byte,
//! output port and a command waiting for its argument, versioned and checked against
//! what the controller can hold. Its exit line and interrupt are given again on restore.

use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

use super::{
    CMD_WRITE_CTR, CMD_WRITE_OUTP, I8042, OUTPUT_LIMIT, STATUS_COMMAND, STATUS_OUTPUT_FULL,
    STATUS_SYSTEM_FLAG,
};
use crate::persist::{check_version, unversioned, Persist, PersistError};
use crate::vm_exit::VmExit;

/// Format version of [`I8042State`].
pub const I8042_STATE_VERSION: u32 = 1;
const DEVICE: &str = "i8042";

/// The controller's guest-visible state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    #[serde(default = "unversioned")]
    pub version: u32,
    pub status: u8,
    pub output: Vec<u8>,
    pub control: u8,
    pub outp: u8,
    pub pending_write: Option<u8>,
}

/// What the host gives a restored controller: where reset requests go, and the keyboard
/// interrupt (an irqfd for IRQ 1) when wired.
pub struct I8042Args {
    pub exit: VmExit,
    pub irq: Option<EventFd>,
}

fn invalid(reason: String) -> PersistError {
    PersistError::Invalid {
        device: DEVICE,
        reason,
    }
}

impl I8042State {
    /// Refuses another format version and values the controller never holds.
    pub fn validate(&self) -> Result<(), PersistError> {
        check_version(DEVICE, self.version, I8042_STATE_VERSION)?;
        if self.output.len() > OUTPUT_LIMIT {
            return Err(invalid(format!(
                "{} queued output bytes, more than the {OUTPUT_LIMIT} it holds",
                self.output.len()
            )));
        }
        let known = STATUS_OUTPUT_FULL | STATUS_SYSTEM_FLAG | STATUS_COMMAND;
        if self.status & !known != 0 || self.status & STATUS_SYSTEM_FLAG == 0 {
            return Err(invalid(format!(
                "status {:#04x} is not one the controller has",
                self.status
            )));
        }
        if (self.status & STATUS_OUTPUT_FULL != 0) == self.output.is_empty() {
            return Err(invalid(format!(
                "status {:#04x} does not match {} queued output bytes",
                self.status,
                self.output.len()
            )));
        }
        match self.pending_write {
            None | Some(CMD_WRITE_CTR) | Some(CMD_WRITE_OUTP) => Ok(()),
            Some(cmd) => Err(invalid(format!(
                "pending command {cmd:#04x} takes no argument"
            ))),
        }
    }
}

impl Persist for I8042 {
    type State = I8042State;
    type ConstructorArgs = I8042Args;
    type Error = PersistError;

    fn save(&self) -> I8042State {
        I8042State {
            version: I8042_STATE_VERSION,
            status: self.status,
            output: self.output.iter().copied().collect(),
            control: self.control,
            outp: self.outp,
            pending_write: self.pending_write,
        }
    }

    fn restore(args: I8042Args, state: &I8042State) -> Result<Self, PersistError> {
        state.validate()?;
        Ok(I8042 {
            exit: args.exit,
            irq: args.irq,
            status: state.status,
            output: state.output.iter().copied().collect(),
            control: state.control,
            outp: state.outp,
            pending_write: state.pending_write,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i8042::SC2_CTRL;

    fn args() -> I8042Args {
        I8042Args {
            exit: VmExit::new().unwrap(),
            irq: None,
        }
    }

    fn saved() -> I8042State {
        let mut k = I8042::new(VmExit::new().unwrap());
        k.send_ctrl_alt_del();
        k.write_command(CMD_WRITE_CTR);
        k.save()
    }

    #[test]
    fn save_restore_save_is_the_same_state_and_the_queue_goes_on() {
        let state = saved();
        let json = serde_json::to_vec(&state).unwrap();
        let back: I8042State = serde_json::from_slice(&json).unwrap();
        let mut r = I8042::restore(args(), &back).unwrap();
        assert_eq!(r.save(), state);
        assert_eq!(r.read_data(), SC2_CTRL);
        // The pending command takes its argument after the restore.
        r.write_data(0x00);
        assert_eq!(r.save().control, 0x00);
        I8042::new(VmExit::new().unwrap())
            .save()
            .validate()
            .unwrap();
    }

    #[test]
    fn a_state_without_a_version_is_read_as_version_1() {
        let mut json = serde_json::to_value(saved()).unwrap();
        json.as_object_mut().unwrap().remove("version");
        let back: I8042State = serde_json::from_value(json).unwrap();
        assert_eq!(back, saved());
    }

    /// Makes a saved state hostile.
    type Spoil = fn(&mut I8042State);

    #[test]
    fn hostile_states_are_refused_with_the_reason() {
        let cases: [(Spoil, &str); 6] = [
            (|s| s.version = 0, "version 0"),
            (
                |s| s.output = vec![0; OUTPUT_LIMIT + 1],
                "65 queued output bytes",
            ),
            (|s| s.status = 0xff, "status 0xff"),
            (|s| s.status &= !STATUS_SYSTEM_FLAG, "is not one"),
            (|s| s.output.clear(), "does not match 0 queued"),
            (|s| s.pending_write = Some(0xfe), "pending command 0xfe"),
        ];
        for (spoil, reason) in cases {
            let mut s = saved();
            spoil(&mut s);
            let err = I8042::restore(args(), &s).map(|_| ()).unwrap_err();
            assert!(err.to_string().contains(reason), "{err} / {reason}");
        }
    }
}
