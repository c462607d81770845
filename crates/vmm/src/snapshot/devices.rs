//! The devices' part of the state file: the legacy devices' states (COM1 UART, i8042,
//! CMOS), each saved and checked by its model's [`devices::Persist`] implementation, and
//! the virtio-pci functions'.

use serde::{Deserialize, Serialize};

use devices::cmos::CmosState;
use devices::i8042::I8042State;
use devices::serial::SerialState;

use super::SnapshotError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStates {
    pub serial: SerialState,
    pub i8042: I8042State,
    pub cmos: CmosState,
    /// The virtio-pci functions, in slot order.
    pub virtio: Vec<virtio::VirtioPciState>,
}

impl DeviceStates {
    /// The legacy devices' checks, made when the state file is read (the virtio states are
    /// checked against the devices built for them).
    pub fn validate(&self) -> Result<(), SnapshotError> {
        self.serial.validate()?;
        self.i8042.validate()?;
        self.cmos.validate()?;
        Ok(())
    }
}
