//! Just enough of the i8042 keyboard controller for guests to probe it, to reset the
//! machine by pulsing the reset line (command 0xFE on port 0x64), and for the host to press
//! Ctrl-Alt-Del (keyboard interrupt on IRQ 1), which guests treat as a request to reboot
//! or shut down — how `vessel stop` and the API's SendCtrlAltDel ask politely.

use std::collections::VecDeque;

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::vm_exit::{ExitReason, VmExit};

mod persist;
pub use persist::{I8042Args, I8042State, I8042_STATE_VERSION};

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
/// Controller configuration byte: keyboard interrupt enabled.
const CTR_KBD_INT: u8 = 0x01;
/// Keyboard commands (sent to the data port) and the acknowledge byte.
const KBD_CMD_RESET: u8 = 0xff;
const KBD_ACK: u8 = 0xfa;
const KBD_SELF_TEST_OK: u8 = 0xaa;
/// Scan code set 2 bytes of Ctrl, Alt, Del (Del is an 0xE0-prefixed key), and the prefix
/// of a key release. The controller translation (on by default) is left to the guest.
const SC2_CTRL: u8 = 0x14;
const SC2_ALT: u8 = 0x11;
const SC2_EXTENDED: u8 = 0xe0;
const SC2_DEL: u8 = 0x71;
const SC2_RELEASE: u8 = 0xf0;
/// Bytes the guest has not read yet are dropped beyond this (a guest that ignores the
/// keyboard must not grow the queue without bound).
const OUTPUT_LIMIT: usize = 64;

/// The controller, mapped as two one-byte devices: data (0x60) and command/status (0x64).
pub struct I8042 {
    exit: VmExit,
    /// Keyboard interrupt (IRQ 1), when wired.
    irq: Option<EventFd>,
    status: u8,
    output: VecDeque<u8>,
    control: u8,
    outp: u8,
    pending_write: Option<u8>,
}

impl I8042 {
    pub fn new(exit: VmExit) -> Self {
        Self {
            exit,
            irq: None,
            status: STATUS_SYSTEM_FLAG,
            output: VecDeque::new(),
            control: CTR_KBD_INT,
            outp: 0x01,
            pending_write: None,
        }
    }

    /// Raise keyboard data interrupts through `irq` (an irqfd for IRQ 1).
    pub fn with_interrupt(mut self, irq: EventFd) -> Self {
        self.irq = Some(irq);
        self
    }

    fn push_output(&mut self, byte: u8) {
        if self.output.len() >= OUTPUT_LIMIT {
            return;
        }
        self.output.push_back(byte);
        self.update_output();
    }

    /// Present the next queued byte to the guest and interrupt it.
    fn update_output(&mut self) {
        if self.output.is_empty() {
            self.status &= !STATUS_OUTPUT_FULL;
            return;
        }
        self.status |= STATUS_OUTPUT_FULL;
        if self.control & CTR_KBD_INT != 0 {
            if let Some(irq) = &self.irq {
                let _ = irq.write(1);
            }
        }
    }

    /// Press and release Ctrl-Alt-Del on the keyboard.
    pub fn send_ctrl_alt_del(&mut self) {
        let press = [SC2_CTRL, SC2_ALT, SC2_EXTENDED, SC2_DEL];
        let release = [
            SC2_EXTENDED,
            SC2_RELEASE,
            SC2_DEL,
            SC2_RELEASE,
            SC2_ALT,
            SC2_RELEASE,
            SC2_CTRL,
        ];
        for b in press.into_iter().chain(release) {
            self.push_output(b);
        }
    }

    /// Port 0x60 read.
    pub fn read_data(&mut self) -> u8 {
        let byte = self.output.pop_front().unwrap_or(0);
        self.update_output();
        byte
    }

    /// Port 0x64 read.
    pub fn read_status(&self) -> u8 {
        self.status
    }

    /// Port 0x60 write: argument of a previous controller command, or a keyboard command
    /// (acknowledged; reset also reports a passed self-test).
    pub fn write_data(&mut self, byte: u8) {
        self.status &= !STATUS_COMMAND;
        match self.pending_write.take() {
            Some(CMD_WRITE_CTR) => {
                self.control = byte;
                self.update_output();
            }
            Some(CMD_WRITE_OUTP) => {
                self.outp = byte;
                // Bit 0 of the output port is the CPU reset line (active low).
                if byte & 1 == 0 {
                    self.exit.request(ExitReason::Reset);
                }
            }
            _ => {
                self.push_output(KBD_ACK);
                if byte == KBD_CMD_RESET {
                    self.push_output(KBD_SELF_TEST_OK);
                }
            }
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
    fn ctrl_alt_del_queues_scan_codes_and_interrupts() {
        let e = VmExit::new().unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut k = I8042::new(e).with_interrupt(irq.try_clone().unwrap());
        k.send_ctrl_alt_del();
        assert!(irq.read().unwrap() >= 1);
        let mut got = Vec::new();
        while k.read_status() & STATUS_OUTPUT_FULL != 0 {
            got.push(k.read_data());
        }
        assert_eq!(got[..4], [SC2_CTRL, SC2_ALT, SC2_EXTENDED, SC2_DEL]);
        assert_eq!(got.len(), 11);
        // A keyboard reset command is acknowledged and passes its self-test.
        k.write_data(KBD_CMD_RESET);
        assert_eq!((k.read_data(), k.read_data()), (KBD_ACK, KBD_SELF_TEST_OK));
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
