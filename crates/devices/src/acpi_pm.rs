//! HW-reduced ACPI sleep control / status and reset registers (ports announced in the FADT).

use crate::bus::BusDevice;
use crate::vm_exit::{ExitReason, VmExit};

/// Offsets from the device base: sleep control, sleep status, reset.
const SLEEP_CONTROL: u64 = 0;
const SLEEP_STATUS: u64 = 1;
const RESET: u64 = 2;
const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;
/// S5 (soft off), matching the DSDT's `_S5_` package.
const SLP_TYP_S5: u8 = 5;
const RESET_VALUE: u8 = 1;

pub struct AcpiPm {
    exit: VmExit,
}

impl AcpiPm {
    pub fn new(exit: VmExit) -> Self {
        Self { exit }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Sleep status: wake status never set; reset register reads 0.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            SLEEP_CONTROL
                if v & SLP_EN != 0 && (v >> SLP_TYP_SHIFT) & SLP_TYP_MASK == SLP_TYP_S5 =>
            {
                self.exit.request(ExitReason::PowerOff)
            }
            RESET if v == RESET_VALUE => self.exit.request(ExitReason::Reset),
            SLEEP_STATUS | SLEEP_CONTROL | RESET => {}
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_powers_off_and_reset_register_resets() {
        let e = VmExit::new().unwrap();
        let mut pm = AcpiPm::new(e.clone());
        pm.write(SLEEP_CONTROL, &[3 << SLP_TYP_SHIFT | SLP_EN]); // S3: ignored
        assert_eq!(e.reason(), None);
        pm.write(SLEEP_CONTROL, &[SLP_TYP_S5 << SLP_TYP_SHIFT]); // no SLP_EN
        assert_eq!(e.reason(), None);
        pm.write(SLEEP_CONTROL, &[SLP_TYP_S5 << SLP_TYP_SHIFT | SLP_EN]);
        assert_eq!(e.reason(), Some(ExitReason::PowerOff));
        let e2 = VmExit::new().unwrap();
        AcpiPm::new(e2.clone()).write(RESET, &[RESET_VALUE]);
        assert_eq!(e2.reason(), Some(ExitReason::Reset));
    }
}
