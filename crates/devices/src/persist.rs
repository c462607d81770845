//! Saving and restoring device models for VM snapshots: the [`Persist`] trait each device
//! implements next to its model (the legacy devices here, the virtio devices in the
//! `virtio` crate, which re-exports it), and [`PersistError`], why a saved state is
//! refused.
//!
//! States are read back from untrusted snapshot files: every state carries a format
//! version, and `restore` checks each value before it builds anything.

use serde::{de::DeserializeOwned, Serialize};

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
pub fn check_version(device: &'static str, found: u32, expected: u32) -> Result<(), PersistError> {
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

/// The version of a legacy device's state written before states carried one (vessel's
/// state file version 2): the same fields, read as format version 1.
pub(crate) fn unversioned() -> u32 {
    1
}
