//! Devices whose queues another process serves (vhost-user: virtio-fs served by
//! virtiofsd). The PCI transport does not run such queues: at DRIVER_OK it hands each
//! enabled queue to the device's [`QueueServer`] with its ring layout, its notify eventfd
//! (the ioeventfd KVM signals on a guest kick) and a call eventfd:
//!
//! * with MSI-X enabled and a vector assigned to the queue, the vector's irqfd
//!   ([`pci::MsiInterrupt::irqfd`]): the server interrupts the guest without the VMM (a
//!   masked vector's irqfd is detached from KVM and keeps the interrupt pending);
//! * otherwise (INTx, or no vector) a relay eventfd of the transport that the VMM's I/O
//!   thread watches and turns into the ISR bit and the INTx line
//!   ([`crate::QueueProcessor::relay_call`]).
//!
//! On a device reset the transport calls [`crate::VirtioDevice::reset`], where the device
//! takes its queues back (GET_VRING_BASE).
//!
//! A VM snapshot first [pauses](QueueServer::pause) the server: it takes its queues back
//! and saves its own state ([`BackendState`], the device model's
//! [`crate::DeviceState::Fs`]); the transport saves each ring's next available index as
//! for any device. The transport starts the server again where it stopped when the VM's
//! vCPUs run again (not when the VM ends after a migration or a suspend: the server then
//! leaves the requests it had not taken to the restored VM's server), and a restored
//! device is started at the saved indices ([`ExternalQueue::next_avail`]) when the
//! restored VM's vCPUs first run (not while a migrated VM waits for the sender's go).
//! Queues started again are kicked and their drivers interrupted once.

use serde::{Deserialize, Serialize};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::queue::QueueLayout;

/// A server refused or failed to take the queues.
#[derive(Debug, thiserror::Error)]
#[error("external queue server: {0}")]
pub struct QueueServerError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// One enabled queue handed to the server.
pub struct ExternalQueue<'a> {
    pub index: usize,
    pub layout: QueueLayout,
    /// The next available entry the server takes: 0 at DRIVER_OK, where the server
    /// stopped when the queue comes back from a pause or a snapshot.
    pub next_avail: u16,
    /// Written when the driver kicks the queue.
    pub kick: &'a EventFd,
    /// Written by the server to interrupt the driver for this queue.
    pub call: &'a EventFd,
}

/// What a device served by another process does at DRIVER_OK.
pub trait QueueServer {
    /// Take `queues` (the enabled ones) over `mem` with the driver's `features`.
    fn start(
        &mut self,
        features: u64,
        mem: &GuestMemoryMmap,
        queues: &[ExternalQueue<'_>],
    ) -> Result<(), QueueServerError>;

    /// A snapshot is being taken: stop the started queues (the server no longer touches
    /// guest memory). Returns each stopped queue's next available index; a failure part-way
    /// returns those of the queues it did stop. [`start`](Self::start) follows when the
    /// VM's vCPUs run again (also after a failure): the server starts the queues it
    /// stopped and keeps serving those it did not.
    fn pause(&mut self) -> Result<Vec<(usize, u16)>, PauseError>;

    /// After [`pause`](Self::pause): save the server's own state for
    /// [`crate::VirtioDevice::save_state`].
    fn save(&mut self) -> Result<(), QueueServerError>;
}

/// A [`QueueServer::pause`] that failed part-way.
#[derive(Debug)]
pub struct PauseError {
    /// The queues it did stop, with their next available index.
    pub stopped: Vec<(usize, u16)>,
    pub error: QueueServerError,
}

/// virtio device ID of a file-system device (virtio-fs).
pub const DEVICE_TYPE_FS: u16 = 26;
/// Format version of [`BackendState`].
pub const BACKEND_STATE_VERSION: u32 = 1;

/// The state of a device whose server is another process: what that process saved of
/// itself (virtiofsd: the inodes and open files the guest refers to). vessel does not
/// interpret it; the server checks it when it loads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendState {
    pub version: u32,
    /// The server's bytes, base64 in the state file.
    #[serde(with = "base64_bytes")]
    pub state: Vec<u8>,
}

/// Bytes as one base64 string (a JSON array of numbers would be four times larger).
mod base64_bytes {
    use base64::Engine as _;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| D::Error::custom(format!("backend state: {e}")))
    }
}
