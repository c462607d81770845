//! One vhost-user-fs device as the VMM sees it: the share, its running virtiofsd and the
//! frontend connection to it. It offers what the PCI transport shows the driver (device
//! ID, features, queue sizes, configuration space) and, at DRIVER_OK, hands guest memory
//! and the queues to virtiofsd ([`FsDevice::activate`]). As a [`VirtioDevice`] with a
//! [`QueueServer`] it sits behind vessel's PCI transport, which hands it the queues.
//!
//! Snapshots: [`FsDevice::pause`] takes the queues back (GET_VRING_BASE), [`FsDevice::save`]
//! saves virtiofsd's state ([`crate::backend_state`]), which [`VirtioDevice::save_state`]
//! then returns; [`FsDevice::restore`] starts a new virtiofsd for the share and loads that state
//! into it before the transport starts the queues at the saved indices.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use virtio::external::{
    BackendState, ExternalQueue, PauseError, QueueServer, QueueServerError, BACKEND_STATE_VERSION,
};
use virtio::{DeviceState, Queue, QueueError, VirtioDevice};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::backend_state::{BackendStateError, Limits};
use crate::frontend::{memory_regions, DeviceConnection, FrontendError, RingLayout};
use crate::fs::{Share, CONFIG_LEN};
use crate::virtiofsd::{Virtiofsd, VirtiofsdError};

/// Request queues vessel configures (plus the high-priority queue 0).
pub const REQUEST_QUEUES: u32 = 1;
/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 1024;
/// `VIRTIO_F_VERSION_1`: a modern device only.
const VERSION_1: u64 = 1 << 32;
/// `VIRTIO_F_RING_INDIRECT_DESC` and `VIRTIO_F_RING_EVENT_IDX`: ring features the
/// transport's split-ring layout carries unchanged.
const RING_FEATURES: u64 = (1 << 28) | (1 << 29);
/// Device-specific feature bits (0 to 23).
const DEVICE_SPECIFIC: u64 = 0xff_ffff;
/// PCI class of a mass storage controller, subclass "other" (as QEMU's vhost-user-fs-pci).
const PCI_CLASS: (u8, u8) = (0x01, 0x80);

/// Errors of a virtio-fs device.
#[derive(Debug, thiserror::Error)]
pub enum FsDeviceError {
    #[error(transparent)]
    Virtiofsd(#[from] VirtiofsdError),
    #[error("share {tag:?}: {source}")]
    Frontend {
        tag: String,
        #[source]
        source: FrontendError,
    },
    #[error("share {tag:?}: duplicating the vhost-user connection: {source}")]
    Duplicate {
        tag: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "share {tag:?}: this virtiofsd cannot save or load its state (no \
         VHOST_USER_PROTOCOL_F_DEVICE_STATE): snapshots, suspend, fork and migration of a VM \
         with shares need virtiofsd 1.11 or later"
    )]
    NoStateTransfer { tag: String },
    #[error("share {tag:?}: virtiofsd's state: {source}")]
    BackendState {
        tag: String,
        #[source]
        source: BackendStateError,
    },
    #[error("share {tag:?}: the saved virtiofsd state is {reason}")]
    BadSavedState { tag: String, reason: String },
}

/// A queue the driver enabled, with the eventfds that connect it to the guest.
pub struct ActiveQueue<'a> {
    pub layout: RingLayout,
    /// The next available entry virtiofsd takes (0 at DRIVER_OK).
    pub next_avail: u16,
    /// The queue's notify ioeventfd.
    pub kick: &'a EventFd,
    /// The irqfd of the queue's MSI-X vector.
    pub call: &'a EventFd,
}

/// A shared folder device: virtiofsd running, connected, features known.
pub struct FsDevice {
    share: Share,
    connection: DeviceConnection,
    features: u64,
    queue_sizes: Vec<u16>,
    config: [u8; CONFIG_LEN],
    /// Queues handed to virtiofsd since the last DRIVER_OK.
    started: Vec<usize>,
    /// virtiofsd's state as the last [`FsDevice::pause`] saved it.
    saved: Option<Vec<u8>>,
    // Dropped last: virtiofsd is stopped after the connection is closed.
    daemon: Arc<DaemonHandle>,
}

/// Stops a device's virtiofsd when the VM ends (the device itself may outlive the VM's
/// run, referenced by the PCI buses).
#[derive(Debug)]
pub struct DaemonHandle {
    daemon: Mutex<Virtiofsd>,
    /// The frontend's end of the vhost-user connection (a duplicate).
    connection: OwnedFd,
}

impl DaemonHandle {
    /// Close the connection (virtiofsd exits when its frontend goes: this stops it even
    /// when the VMM switched to a user that may not signal it), then kill and reap it.
    pub fn stop(&self) {
        // SAFETY: shutdown on a socket descriptor this handle owns.
        unsafe { libc::shutdown(self.connection.as_raw_fd(), libc::SHUT_RDWR) };
        self.daemon.lock().unwrap_or_else(|p| p.into_inner()).stop();
    }
}

impl FsDevice {
    /// Start virtiofsd (`binary`) for `share` on `socket` and connect to it.
    pub fn start(binary: &Path, share: Share, socket: &Path) -> Result<Self, FsDeviceError> {
        let daemon = Virtiofsd::start(binary, &share, socket)?;
        let frontend = |source| FsDeviceError::Frontend {
            tag: share.tag.clone(),
            source,
        };
        let queues = u64::from(REQUEST_QUEUES) + 1;
        let mut connection =
            DeviceConnection::connect(daemon.socket(), queues).map_err(frontend)?;
        daemon.remove_socket();
        let duplicate = connection.as_fd().try_clone_to_owned();
        let connection_fd = duplicate.map_err(|source| FsDeviceError::Duplicate {
            tag: share.tag.clone(),
            source,
        })?;
        let features = connection
            .handshake(VERSION_1, queues as usize)
            .map_err(frontend)?;
        Ok(Self {
            config: share.config_space(REQUEST_QUEUES),
            share,
            connection,
            features,
            queue_sizes: vec![QUEUE_SIZE; REQUEST_QUEUES as usize + 1],
            started: Vec::new(),
            saved: None,
            daemon: Arc::new(DaemonHandle {
                daemon: Mutex::new(daemon),
                connection: connection_fd,
            }),
        })
    }

    /// Whether this virtiofsd saves and loads its state (snapshots need it).
    pub fn state_transfer(&self) -> bool {
        self.connection.state_transfer()
    }

    /// What stops this device's virtiofsd when the VM ends.
    pub fn daemon(&self) -> Arc<DaemonHandle> {
        self.daemon.clone()
    }

    /// The share this device serves.
    pub fn share(&self) -> &Share {
        &self.share
    }

    /// virtio device ID (26).
    pub fn device_type(&self) -> u16 {
        crate::fs::DEVICE_ID
    }

    /// Features to offer the driver: virtiofsd's device-specific ones, VERSION_1 and the
    /// split-ring features, without the vhost-user-only bit (nor anything the transport
    /// does not carry, such as packed rings).
    pub fn offered_features(&self) -> u64 {
        self.features & (DEVICE_SPECIFIC | VERSION_1 | RING_FEATURES)
    }

    /// The configuration space: the tag and the number of request queues.
    pub fn config(&self) -> [u8; CONFIG_LEN] {
        self.config
    }

    /// DRIVER_OK: negotiate `driver_features`, send guest memory and hand over `queues`
    /// (index, queue) — from here virtiofsd serves them without the VMM.
    pub fn activate(
        &mut self,
        driver_features: u64,
        mem: &GuestMemoryMmap,
        queues: &[(usize, ActiveQueue<'_>)],
    ) -> Result<(), FsDeviceError> {
        let tag = self.share.tag.clone();
        let frontend = |source| FsDeviceError::Frontend {
            tag: tag.clone(),
            source,
        };
        self.connection
            .ack_features(driver_features)
            .map_err(frontend)?;
        let regions = memory_regions(mem).map_err(frontend)?;
        self.connection.set_memory(&regions).map_err(frontend)?;
        for (index, q) in queues {
            // Still virtiofsd's: a pause failed before it stopped this one.
            if self.started.contains(index) {
                continue;
            }
            self.connection
                .start_queue_at(*index, &q.layout, q.next_avail, q.kick, q.call)
                .map_err(frontend)?;
            self.started.push(*index);
        }
        Ok(())
    }

    /// The driver reset the device: take the queues back from virtiofsd
    /// (GET_VRING_BASE). Returns (queue, next available index) of each. After a failure
    /// the device forgets them all (the driver sets the queues up again).
    pub fn stop_queues(&mut self) -> Result<Vec<(usize, u16)>, FsDeviceError> {
        let stopped = self.pause().map_err(|(_, e)| e);
        self.started.clear();
        stopped
    }

    /// Before a snapshot: stop the queues. Returns each stopped queue's next available
    /// index; a failure part-way returns those it did stop, and the device keeps the
    /// others as started (still virtiofsd's: [`activate`](Self::activate) after the
    /// snapshot leaves them be).
    #[allow(clippy::type_complexity)]
    pub fn pause(&mut self) -> Result<Vec<(usize, u16)>, (Vec<(usize, u16)>, FsDeviceError)> {
        let mut bases = Vec::with_capacity(self.started.len());
        while let Some(&index) = self.started.first() {
            match self.connection.stop_queue(index) {
                Ok(base) => {
                    self.started.remove(0);
                    bases.push((index, base));
                }
                Err(source) => {
                    let tag = self.share.tag.clone();
                    return Err((bases, FsDeviceError::Frontend { tag, source }));
                }
            }
        }
        Ok(bases)
    }

    /// With the queues stopped: save virtiofsd's state, kept for
    /// [`VirtioDevice::save_state`].
    pub fn save(&mut self) -> Result<(), FsDeviceError> {
        if !self.connection.state_transfer() {
            return Err(FsDeviceError::NoStateTransfer {
                tag: self.share.tag.clone(),
            });
        }
        let state = self
            .connection
            .save_backend_state(Limits::default())
            .map_err(|source| FsDeviceError::BackendState {
                tag: self.share.tag.clone(),
                source,
            })?;
        tracing::info!(tag = %self.share.tag, bytes = state.len(), "virtiofsd state saved");
        self.saved = Some(state);
        Ok(())
    }

    /// A device for `share` as a snapshot saved it: a new virtiofsd (`binary`, on
    /// `socket`) for the share's directory, `saved` (untrusted) loaded into it. The
    /// transport then starts the queues where they were.
    pub fn restore(
        binary: &Path,
        share: Share,
        socket: &Path,
        saved: &BackendState,
    ) -> Result<Self, FsDeviceError> {
        let bad = |reason: String| FsDeviceError::BadSavedState {
            tag: share.tag.clone(),
            reason,
        };
        if saved.version != BACKEND_STATE_VERSION {
            return Err(bad(format!(
                "of version {} (this vessel reads version {BACKEND_STATE_VERSION})",
                saved.version
            )));
        }
        if saved.state.is_empty() {
            return Err(bad("empty".to_string()));
        }
        let device = Self::start(binary, share, socket)?;
        let tag = || device.share.tag.clone();
        if !device.connection.state_transfer() {
            return Err(FsDeviceError::NoStateTransfer { tag: tag() });
        }
        device
            .connection
            .load_backend_state(&saved.state, Limits::default())
            .map_err(|source| FsDeviceError::BackendState { tag: tag(), source })?;
        let bytes = saved.state.len();
        tracing::info!(tag = %device.share.tag, bytes, "virtiofsd state loaded");
        Ok(device)
    }
}

impl VirtioDevice for FsDevice {
    fn device_type(&self) -> u16 {
        crate::fs::DEVICE_ID
    }
    fn pci_class(&self) -> (u8, u8) {
        PCI_CLASS
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        self.offered_features()
    }
    fn config_len(&self) -> usize {
        CONFIG_LEN
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if let Some(bytes) = self.config.get(start..) {
            let n = bytes.len().min(data.len());
            data[..n].copy_from_slice(&bytes[..n]);
        }
    }
    fn queue_server(&mut self) -> Option<&mut dyn QueueServer> {
        Some(self)
    }
    fn save_state(&self) -> DeviceState {
        // Empty unless paused: such a state is refused on restore.
        DeviceState::Fs(BackendState {
            version: BACKEND_STATE_VERSION,
            state: self.saved.clone().unwrap_or_default(),
        })
    }
    fn reset(&mut self) {
        if let Err(e) = self.stop_queues() {
            tracing::warn!("virtio-fs reset: {e}");
        }
    }
    fn process_queue(
        &mut self,
        _index: usize,
        _queue: &mut Queue,
        _mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        // virtiofsd runs the queues; the transport never asks.
        Ok(false)
    }
}

impl QueueServer for FsDevice {
    fn start(
        &mut self,
        features: u64,
        mem: &GuestMemoryMmap,
        queues: &[ExternalQueue<'_>],
    ) -> Result<(), QueueServerError> {
        let active: Vec<(usize, ActiveQueue<'_>)> = queues
            .iter()
            .map(|q| {
                let layout = RingLayout {
                    size: q.layout.size,
                    desc: q.layout.desc,
                    avail: q.layout.avail,
                    used: q.layout.used,
                };
                (
                    q.index,
                    ActiveQueue {
                        layout,
                        next_avail: q.next_avail,
                        kick: q.kick,
                        call: q.call,
                    },
                )
            })
            .collect();
        // The state a pause saved has been taken by now.
        self.saved = None;
        self.activate(features, mem, &active)
            .map_err(|e| QueueServerError(Box::new(e)))
    }

    fn pause(&mut self) -> Result<Vec<(usize, u16)>, PauseError> {
        FsDevice::pause(self).map_err(|(stopped, e)| PauseError {
            stopped,
            error: QueueServerError(Box::new(e)),
        })
    }

    fn save(&mut self) -> Result<(), QueueServerError> {
        FsDevice::save(self).map_err(|e| QueueServerError(Box::new(e)))
    }
}
