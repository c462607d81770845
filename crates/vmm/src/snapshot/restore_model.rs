//! Building the virtio device models that keep state of their own: new at boot, from
//! their saved state ([`virtio::Persist`]) when a snapshot is loaded.

use std::io::Write;

use virtio::balloon::{Balloon, BalloonConfig};
use virtio::console::{Console, ConsoleArgs};
use virtio::net::{Net, NetArgs};
use virtio::vsock::{Vsock, VsockArgs};
use virtio::{DeviceState, Persist, PersistError};

use super::SnapshotError;

fn persist_err(index: usize) -> impl Fn(PersistError) -> SnapshotError {
    move |source| SnapshotError::VirtioDevice {
        slot: index + 1,
        source,
    }
}

/// The NIC at virtio `index` over `backend` with `mac`, restored from `saved` if given.
pub fn net(
    backend: Box<dyn virtio::net::NetBackend>,
    mac: [u8; 6],
    saved: Option<&DeviceState>,
    index: usize,
) -> Result<Net, SnapshotError> {
    match saved {
        None => Ok(Net::new(backend, mac).0),
        Some(DeviceState::Net(state)) => {
            Net::restore(NetArgs { backend, mac }, state).map_err(persist_err(index))
        }
        Some(_) => Err(persist_err(index)(PersistError::WrongDevice("virtio-net"))),
    }
}

/// The console at virtio `index` writing to `output`, restored from `saved` if given.
pub fn console(
    output: Box<dyn Write + Send>,
    saved: Option<&DeviceState>,
    index: usize,
) -> Result<Console, SnapshotError> {
    match saved {
        None => Ok(Console::new(output, 80, 25).0),
        Some(DeviceState::Console(state)) => {
            Console::restore(ConsoleArgs { output }, state).map_err(persist_err(index))
        }
        Some(_) => Err(persist_err(index)(PersistError::WrongDevice(
            "virtio-console",
        ))),
    }
}

/// The balloon at virtio `index` configured as `config`, restored from `saved` if given.
pub fn balloon(
    config: BalloonConfig,
    saved: Option<&DeviceState>,
    index: usize,
) -> Result<Balloon, SnapshotError> {
    match saved {
        None => Balloon::new(config)
            .map(|(balloon, _)| balloon)
            .map_err(|e| {
                persist_err(index)(PersistError::Invalid {
                    device: "virtio-balloon",
                    reason: e.to_string(),
                })
            }),
        Some(DeviceState::Balloon(state)) => {
            Balloon::restore(config, state).map_err(persist_err(index))
        }
        Some(_) => Err(persist_err(index)(PersistError::WrongDevice(
            "virtio-balloon",
        ))),
    }
}

/// The vsock device at virtio `index` as `config` says, restored from `saved` (without
/// connections: the guest gets a transport reset).
pub fn vsock(
    config: &crate::VsockConfig,
    saved: &DeviceState,
    index: usize,
) -> Result<Vsock, SnapshotError> {
    match saved {
        DeviceState::Vsock(state) => Vsock::restore(
            VsockArgs {
                cid: config.cid,
                uds: config.uds.clone(),
            },
            state,
        )
        .map_err(persist_err(index)),
        _ => Err(persist_err(index)(PersistError::WrongDevice(
            "virtio-vsock",
        ))),
    }
}
