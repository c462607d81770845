//! Saving and restoring device models for VM snapshots: the [`Persist`] trait each
//! device implements next to its model, and [`DeviceState`], the device-specific part
//! of a virtio function's saved state (the transport saves the rest).
//!
//! States are read back from untrusted snapshot files: every state carries a format
//! version, and `restore` checks each value before it builds anything.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// A component that can be saved into a `State` and built again from it (the model is
/// Firecracker's `snapshot::Persist`).
pub trait Persist: Sized {
    /// What is saved: plain data, serialised into the snapshot's state file.
    type State: Serialize + DeserializeOwned;
    /// What the host provides on restore (backends, guest memory, interrupts...).
    type ConstructorArgs;
    type Error;

    /// The component's state now. The caller makes sure nothing changes it meanwhile
    /// (the VM is paused and the device's queues are held).
    fn save(&self) -> Self::State;
    /// A component built from `args` and `state` (untrusted: checked value by value).
    fn restore(args: Self::ConstructorArgs, state: &Self::State) -> Result<Self, Self::Error>;
}

/// The device-specific state of a virtio function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceState {
    /// Devices whose only guest-visible state is the transport's (virtio-blk: read-only
    /// configuration, requests complete before the snapshot; virtio-rng).
    Stateless,
    Net(crate::net::NetState),
    Console(crate::console::ConsoleState),
    Balloon(crate::balloon::BalloonState),
    Vsock(crate::vsock::VsockState),
}

impl DeviceState {
    /// The virtio device type this state belongs to, `None` for any stateless device.
    pub fn device_type(&self) -> Option<u16> {
        match self {
            DeviceState::Stateless => None,
            DeviceState::Net(_) => Some(crate::net::DEVICE_TYPE_NET),
            DeviceState::Console(_) => Some(crate::console::DEVICE_TYPE_CONSOLE),
            DeviceState::Balloon(_) => Some(crate::balloon::DEVICE_TYPE_BALLOON),
            DeviceState::Vsock(_) => Some(crate::vsock::DEVICE_TYPE_VSOCK),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PersistError {
    #[error(
        "{device} state version {found} is not supported (this vessel reads version {expected})"
    )]
    Version {
        device: &'static str,
        found: u32,
        expected: u32,
    },
    #[error("the saved state is not a {0} state")]
    WrongDevice(&'static str),
    #[error("{device}: {reason}")]
    Invalid {
        device: &'static str,
        reason: String,
    },
    #[error("{device}: the snapshot's {what} {saved} does not match the configured {configured}")]
    Mismatch {
        device: &'static str,
        what: &'static str,
        saved: String,
        configured: String,
    },
}

/// Refuses a state of another format version.
pub(crate) fn check_version(
    device: &'static str,
    found: u32,
    expected: u32,
) -> Result<(), PersistError> {
    if found == expected {
        Ok(())
    } else {
        Err(PersistError::Version {
            device,
            found,
            expected,
        })
    }
}
