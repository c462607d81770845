//! Just enough of the i8042 keyboard controller for guests to probe it and to reset the
//! machine by pulsing the reset line (command 0xFE on port 0x64).

use crate::bus::BusDevice;
use crate::vm_exit::{ExitReason, VmExit};

pub const I8042_DATA_PORT: u16 = 0x60;
pub const I8042_COMMAND_PORT: u16 = 0x64;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_RESET_CPU: u8 = 0xfe;
const CMD_SELF_TEST: u8 = 0xaa;
const SELF_TEST_OK: u8 = 0x55;
const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM_FLAG: u8 = 0x04;
const STATUS_COMMAND: u8 = 0x08;

/// The controller, mapped as two one-byte devices: data (0x60) and command/status (0x64).
pub struct I8042 {
    exit: VmExit,
    status: u8,
    output: Option<u8>,
    control: u8,
    outp: u8,
    pending_write: Option<u8>,
}

impl I8042 {
    pub fn new(exit: VmExit) -> Self {
        Self {
            exit,
            status: STATUS_SYSTEM_FLAG,
            output: None,
            control: 0,
            outp: 0x01,
            pending_write: None,
        }
    }

    fn push_output(&mut self, byte: u8) {
        self.output = Some(byte);
        self.status |= STATUS_OUTPUT_FULL;
    }

    /// Port 0x60 read.
    pub fn read_data(&mut self) -> u8 {
        self.status &= !STATUS_OUTPUT_FULL;
        self.output.take().unwrap_or(0)
    }

    /// Port 0x64 read.
    pub fn read_status(&self) -> u8 {
        self.status
    }

    /// Port 0x60 write: argument of a previous command, otherwise ignored (no keyboard).
    pub fn write_data(&mut self, byte: u8) {
        self.status &= !STATUS_COMMAND;
        match self.pending_write.take() {
            Some(CMD_WRITE_CTR) => self.control = byte,
            Some(CMD_WRITE_OUTP) => {
                self.outp = byte;
                // Bit 0 of the output port is the CPU reset line (active low).
                if byte & 1 == 0 {
                    self.exit.request(ExitReason::Reset);
                }
            }
            _ => {}
        }
    }

    /// Port 0x64 write: a controller command.
    pub fn write_command(&mut self, cmd: u8) {
        self.status |= STATUS_COMMAND;
        match cmd {
            CMD_RESET_CPU => self.exit.request(ExitReason::Reset),
            CMD_READ_CTR => self.push_output(self.control),
            CMD_READ_OUTP => self.push_output(self.outp),
            CMD_SELF_TEST => self.push_output(SELF_TEST_OK),
            CMD_WRITE_CTR | CMD_WRITE_OUTP => self.pending_write = Some(cmd),
            _ => {}
        }
    }
}

/// Bus adapter: the same controller at the data port (`offset` 0) or the command port.
pub struct I8042Port {
    pub controller: std::sync::Arc<std::sync::Mutex<I8042>>,
    pub is_command: bool,
}

impl BusDevice for I8042Port {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        let mut c = self.controller.lock().unwrap_or_else(|p| p.into_inner());
        let v = if self.is_command {
            c.read_status()
        } else {
            c.read_data()
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&b) = data.first() else { return };
        let mut c = self.controller.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_command {
            c.write_command(b)
        } else {
            c.write_data(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_requests_reset() {
        let e = VmExit::new().unwrap();
        let mut k = I8042::new(e.clone());
        k.write_command(CMD_SELF_TEST);
        assert_eq!(k.read_status() & STATUS_OUTPUT_FULL, 1);
        assert_eq!(k.read_data(), SELF_TEST_OK);
        assert_eq!(e.reason(), None);
        k.write_command(CMD_RESET_CPU);
        assert_eq!(e.reason(), Some(ExitReason::Reset));
    }

    #[test]
    fn output_port_reset_line() {
        let e = VmExit::new().unwrap();
        let mut k = I8042::new(e.clone());
        k.write_command(CMD_WRITE_OUTP);
        k.write_data(0xfe);
        assert_eq!(e.reason(), Some(ExitReason::Reset));
    }
}
