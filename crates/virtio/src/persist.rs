//! Saving and restoring device models for VM snapshots: the [`Persist`] trait each
//! device implements next to its model (defined with the legacy devices in
//! `devices::persist`), and [`DeviceState`], the device-specific part of a virtio
//! function's saved state (the transport saves the rest).
//!
//! States are read back from untrusted snapshot files: every state carries a format
//! version, and `restore` checks each value before it builds anything.

use serde::{Deserialize, Serialize};

pub(crate) use devices::persist::check_version;
pub use devices::persist::{Persist, PersistError};

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
    /// virtio-fs: virtiofsd's own state.
    Fs(crate::external::BackendState),
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
            DeviceState::Fs(_) => Some(crate::external::DEVICE_TYPE_FS),
        }
    }
}
