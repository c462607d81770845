//! The legacy devices' state (COM1 UART, i8042, CMOS) in the state file.

use serde::{Deserialize, Serialize};

use devices::i8042::I8042State;
use vm_superio::serial::SerialState;

use super::SnapshotError;

/// Bytes the UART's receive FIFO holds (vm-superio's FIFO_SIZE).
const UART_FIFO_LEN: usize = 64;
/// Bytes the i8042 output queue holds at most.
const I8042_OUTPUT_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UartState {
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyboardState {
    pub status: u8,
    pub output: Vec<u8>,
    pub control: u8,
    pub outp: u8,
    pub pending_write: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmosState {
    pub index: u8,
    pub nvram: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStates {
    pub serial: UartState,
    pub i8042: KeyboardState,
    pub cmos: CmosState,
    /// The virtio-pci functions, in slot order.
    pub virtio: Vec<virtio::VirtioPciState>,
}

impl From<SerialState> for UartState {
    fn from(s: SerialState) -> Self {
        UartState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl UartState {
    pub fn to_serial_state(&self) -> SerialState {
        SerialState {
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

impl From<I8042State> for KeyboardState {
    fn from(s: I8042State) -> Self {
        KeyboardState {
            status: s.status,
            output: s.output,
            control: s.control,
            outp: s.outp,
            pending_write: s.pending_write,
        }
    }
}

impl KeyboardState {
    pub fn to_i8042_state(&self) -> I8042State {
        I8042State {
            status: self.status,
            output: self.output.clone(),
            control: self.control,
            outp: self.outp,
            pending_write: self.pending_write,
        }
    }
}

impl CmosState {
    pub fn nvram(&self) -> Result<[u8; 128], SnapshotError> {
        self.nvram
            .as_slice()
            .try_into()
            .map_err(|_| SnapshotError::DeviceState {
                device: "CMOS",
                reason: format!("{} bytes of NVRAM where 128 are expected", self.nvram.len()),
            })
    }
}

impl DeviceStates {
    /// Bounds the devices would otherwise enforce late or not at all.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        if self.serial.in_buffer.len() > UART_FIFO_LEN {
            return Err(SnapshotError::DeviceState {
                device: "serial port",
                reason: format!(
                    "{} received bytes, more than its {UART_FIFO_LEN}-byte FIFO",
                    self.serial.in_buffer.len()
                ),
            });
        }
        if self.i8042.output.len() > I8042_OUTPUT_LEN {
            return Err(SnapshotError::DeviceState {
                device: "i8042",
                reason: format!("{} queued output bytes", self.i8042.output.len()),
            });
        }
        self.cmos.nvram()?;
        Ok(())
    }
}
