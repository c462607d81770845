//! QEMU-compatible isa-debug-exit: a write of `code` ends the VM with status
//! `(code << 1) | 1`. vessel places it at port 0xf4, 4 bytes wide.

use crate::bus::BusDevice;
use crate::vm_exit::{ExitReason, VmExit};

pub const DEBUG_EXIT_PORT: u16 = 0xf4;
pub const DEBUG_EXIT_LEN: u16 = 4;

pub struct DebugExit {
    exit: VmExit,
}

impl DebugExit {
    pub fn new(exit: VmExit) -> Self {
        Self { exit }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // QEMU takes the written value as the code, whatever the access width.
        let mut value = [0u8; 4];
        let n = data.len().min(4);
        value[..n].copy_from_slice(&data[..n]);
        let _ = offset;
        self.exit
            .request(ExitReason::DebugExit(u32::from_le_bytes(value)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_requests_exit_with_value() {
        let e = VmExit::new().unwrap();
        let mut d = DebugExit::new(e.clone());
        d.write(0, &[3, 0, 0, 0]);
        assert_eq!(e.reason(), Some(ExitReason::DebugExit(3)));
        assert_eq!(e.reason().unwrap().exit_code(), 7);
        let e2 = VmExit::new().unwrap();
        DebugExit::new(e2.clone()).write(0, &[0x21]);
        assert_eq!(e2.reason(), Some(ExitReason::DebugExit(0x21)));
    }
}
