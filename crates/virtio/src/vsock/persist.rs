//! virtio-vsock's snapshot state, as Firecracker saves it: the guest's CID and the
//! receive buffer the device held, but no connection. Host connections (Unix sockets) do
//! not survive the process, so a restored device starts with none and tells the guest
//! with a transport-reset event (virtio 1.2 §5.10.6.7): the guest's driver resets every
//! socket, and programs reconnect as after a host restart.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Vsock, VsockError, QUEUE_SIZE};
use crate::persist::{check_version, Persist, PersistError};

/// Format version of [`VsockState`].
pub const VSOCK_STATE_VERSION: u32 = 1;
const DEVICE: &str = "virtio-vsock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockState {
    pub version: u32,
    pub cid: u64,
    /// Head of the receive chain the device held for its next packet.
    pub held_rx_head: Option<u16>,
}

/// What a restored device is built on: the configured CID and host socket.
pub struct VsockArgs {
    pub cid: u64,
    pub uds: PathBuf,
}

fn invalid(reason: String) -> PersistError {
    PersistError::Invalid {
        device: DEVICE,
        reason,
    }
}

impl Persist for Vsock {
    type State = VsockState;
    type ConstructorArgs = VsockArgs;
    type Error = PersistError;

    fn save(&self) -> VsockState {
        VsockState {
            version: VSOCK_STATE_VERSION,
            cid: self.cid,
            held_rx_head: self.held.as_ref().map(|c| c.head).or(self.restored_rx_head),
        }
    }

    fn restore(args: VsockArgs, state: &VsockState) -> Result<Self, PersistError> {
        check_version(DEVICE, state.version, VSOCK_STATE_VERSION)?;
        if state.cid != args.cid {
            return Err(PersistError::Mismatch {
                device: DEVICE,
                what: "guest CID",
                saved: state.cid.to_string(),
                configured: args.cid.to_string(),
            });
        }
        if state.held_rx_head.is_some_and(|h| h >= QUEUE_SIZE) {
            return Err(invalid(format!(
                "held receive buffer {:?}",
                state.held_rx_head
            )));
        }
        let mut device =
            Vsock::new(args.cid, &args.uds).map_err(|e: VsockError| invalid(e.to_string()))?;
        device.restored_rx_head = state.held_rx_head;
        device.reset_pending = true;
        // The I/O thread runs the queues when the muxer is readable: the reset event goes
        // out as soon as it starts.
        device.muxer.wake();
        Ok(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uds(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vessel-vsock-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn state_round_trips_and_the_restored_device_owes_a_reset() {
        let path = uds("a");
        let device = Vsock::new(7, &path).unwrap();
        let state = device.save();
        drop(device);
        let json = serde_json::to_vec(&state).unwrap();
        let back: VsockState = serde_json::from_slice(&json).unwrap();
        let restored = Vsock::restore(VsockArgs { cid: 7, uds: path }, &back).unwrap();
        assert!(restored.reset_pending);
        assert_eq!(restored.save(), state);
    }

    #[test]
    fn hostile_states_are_refused() {
        let good = VsockState {
            version: VSOCK_STATE_VERSION,
            cid: 9,
            held_rx_head: Some(4),
        };
        let args = |name: &str| VsockArgs {
            cid: 9,
            uds: uds(name),
        };
        assert!(Vsock::restore(args("ok"), &good).is_ok());
        let bad = [
            VsockState {
                version: 2,
                ..good.clone()
            },
            VsockState {
                cid: 10,
                ..good.clone()
            },
            VsockState {
                held_rx_head: Some(QUEUE_SIZE),
                ..good.clone()
            },
        ];
        for (i, state) in bad.iter().enumerate() {
            let e = Vsock::restore(args(&format!("bad{i}")), state).err();
            assert!(e.is_some(), "{state:?}");
        }
        // A CID out of range is refused by the device's own check.
        let e = Vsock::restore(
            VsockArgs {
                cid: 2,
                uds: uds("cid"),
            },
            &VsockState { cid: 2, ..good },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("out of range"), "{e}");
    }
}
