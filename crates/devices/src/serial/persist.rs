//! The COM1 UART's snapshot state: vm-superio's registers and receive FIFO, versioned and
//! checked against what the 16550 model can hold. Host input queued in front of the FIFO
//! is host-side and not saved; where output goes is given again on restore.

use std::collections::VecDeque;
use std::io::Write;

use serde::{Deserialize, Serialize};
use vm_superio::serial::{NoEvents, SerialState as UartRegisters};
use vm_superio::Serial as Uart;
use vmm_sys_util::eventfd::EventFd;

use super::{EventFdTrigger, Serial};
use crate::persist::{check_version, unversioned, Persist, PersistError};

/// Format version of [`SerialState`].
pub const SERIAL_STATE_VERSION: u32 = 1;
const DEVICE: &str = "serial port";
/// Bytes the UART's receive FIFO holds (vm-superio's FIFO_SIZE).
pub const UART_FIFO_LEN: usize = 64;
/// Interrupt enable bits the UART keeps (vm-superio's IER_UART_VALID_BITS).
const IER_VALID: u8 = 0x0f;
/// Interrupt identification values the UART holds: none pending, or THR empty and/or
/// received data available.
const IIR_VALUES: [u8; 4] = [0x01, 0x02, 0x04, 0x06];
/// Line status: data ready (bit 0), and THR empty and idle (bits 5, 6), which vm-superio
/// never clears.
const LSR_DATA_READY: u8 = 0x01;
const LSR_ALWAYS: u8 = 0x60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialState {
    #[serde(default = "unversioned")]
    pub version: u32,
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

/// What the host gives a restored UART: its interrupt (an irqfd for IRQ 4) and output.
pub struct SerialArgs {
    pub interrupt: EventFd,
    pub output: Box<dyn Write + Send>,
}

fn invalid(reason: String) -> PersistError {
    PersistError::Invalid {
        device: DEVICE,
        reason,
    }
}

impl SerialState {
    /// Refuses another format version and register values the 16550 model never holds.
    pub fn validate(&self) -> Result<(), PersistError> {
        check_version(DEVICE, self.version, SERIAL_STATE_VERSION)?;
        if self.in_buffer.len() > UART_FIFO_LEN {
            return Err(invalid(format!(
                "{} received bytes, more than its {UART_FIFO_LEN}-byte FIFO",
                self.in_buffer.len()
            )));
        }
        if self.interrupt_enable & !IER_VALID != 0 {
            return Err(invalid(format!(
                "interrupt enable register {:#04x} has reserved bits set",
                self.interrupt_enable
            )));
        }
        if !IIR_VALUES.contains(&self.interrupt_identification) {
            return Err(invalid(format!(
                "interrupt identification {:#04x} is not one the UART reports",
                self.interrupt_identification
            )));
        }
        let lsr = self.line_status;
        if lsr & !(LSR_ALWAYS | LSR_DATA_READY) != 0 || lsr & LSR_ALWAYS != LSR_ALWAYS {
            return Err(invalid(format!(
                "line status {lsr:#04x} is not one the UART has"
            )));
        }
        if (lsr & LSR_DATA_READY != 0) == self.in_buffer.is_empty() {
            return Err(invalid(format!(
                "line status {lsr:#04x} does not match {} received bytes",
                self.in_buffer.len()
            )));
        }
        Ok(())
    }

    fn registers(&self) -> UartRegisters {
        UartRegisters {
            baud_divisor_low: self.baud_divisor_low,
            baud_divisor_high: self.baud_divisor_high,
            interrupt_enable: self.interrupt_enable,
            interrupt_identification: self.interrupt_identification,
            line_control: self.line_control,
            line_status: self.line_status,
            modem_control: self.modem_control,
            modem_status: self.modem_status,
            scratch: self.scratch,
            in_buffer: self.in_buffer.clone(),
        }
    }
}

impl Persist for Serial {
    type State = SerialState;
    type ConstructorArgs = SerialArgs;
    type Error = PersistError;

    fn save(&self) -> SerialState {
        let r = self.uart.state();
        SerialState {
            version: SERIAL_STATE_VERSION,
            baud_divisor_low: r.baud_divisor_low,
            baud_divisor_high: r.baud_divisor_high,
            interrupt_enable: r.interrupt_enable,
            interrupt_identification: r.interrupt_identification,
            line_control: r.line_control,
            line_status: r.line_status,
            modem_control: r.modem_control,
            modem_status: r.modem_status,
            scratch: r.scratch,
            in_buffer: r.in_buffer,
        }
    }

    fn restore(args: SerialArgs, state: &SerialState) -> Result<Self, PersistError> {
        state.validate()?;
        let uart = Uart::from_state(
            &state.registers(),
            EventFdTrigger::new(args.interrupt),
            NoEvents,
            args.output,
        )
        .map_err(|e| invalid(format!("{e:?}")))?;
        Ok(Serial {
            uart,
            pending_input: VecDeque::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusDevice;

    fn args() -> SerialArgs {
        SerialArgs {
            interrupt: EventFd::new(0).unwrap(),
            output: Box::new(std::io::sink()),
        }
    }

    fn saved() -> SerialState {
        let mut s = Serial::new(EventFd::new(0).unwrap(), Box::new(std::io::sink()));
        s.write(7, &[0x5a]);
        s.write(1, &[0x01]);
        s.queue_input(b"ab");
        s.save()
    }

    #[test]
    fn save_restore_save_is_the_same_state_and_the_uart_goes_on() {
        let state = saved();
        assert_eq!(state.in_buffer, b"ab");
        let json = serde_json::to_vec(&state).unwrap();
        let back: SerialState = serde_json::from_slice(&json).unwrap();
        let mut r = Serial::restore(args(), &back).unwrap();
        assert_eq!(r.save(), state);
        let mut b = [0u8];
        r.read(7, &mut b);
        assert_eq!(b[0], 0x5a);
        r.read(0, &mut b);
        assert_eq!(b[0], b'a');
        // A fresh UART's state is valid too.
        let fresh = Serial::new(EventFd::new(0).unwrap(), Box::new(std::io::sink())).save();
        fresh.validate().unwrap();
    }

    #[test]
    fn a_state_without_a_version_is_read_as_version_1() {
        let mut json: serde_json::Value = serde_json::to_value(saved()).unwrap();
        json.as_object_mut().unwrap().remove("version");
        let back: SerialState = serde_json::from_value(json).unwrap();
        assert_eq!(back, saved());
    }

    /// Makes a saved state hostile.
    type Spoil = fn(&mut SerialState);

    #[test]
    fn hostile_states_are_refused_with_the_reason() {
        let cases: [(Spoil, &str); 7] = [
            (|s| s.version = 2, "version 2"),
            (|s| s.in_buffer = vec![0; 4096], "4096 received bytes"),
            (|s| s.interrupt_enable = 0xf1, "reserved bits"),
            (
                |s| s.interrupt_identification = 0xc1,
                "interrupt identification",
            ),
            (|s| s.line_status = 0xff, "line status"),
            (|s| s.line_status = 0x60, "does not match 2 received bytes"),
            (
                |s| {
                    s.in_buffer.clear();
                    s.line_status = 0x61;
                },
                "does not match 0 received bytes",
            ),
        ];
        for (spoil, reason) in cases {
            let mut s = saved();
            spoil(&mut s);
            let err = Serial::restore(args(), &s).map(|_| ()).unwrap_err();
            assert!(err.to_string().contains(reason), "{err} / {reason}");
        }
    }
}
