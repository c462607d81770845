//! One vhost-user-fs device as the VMM sees it: the share, its running virtiofsd and the
//! frontend connection to it. It offers what the PCI transport shows the driver (device
//! ID, features, queue sizes, configuration space) and, at DRIVER_OK, hands guest memory
//! and the queues to virtiofsd ([`FsDevice::activate`]).

use std::path::Path;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::frontend::{memory_regions, DeviceConnection, FrontendError, RingLayout};
use crate::fs::{Share, CONFIG_LEN};
use crate::virtiofsd::{Virtiofsd, VirtiofsdError};

/// Request queues vessel configures (plus the high-priority queue 0).
pub const REQUEST_QUEUES: u32 = 1;
/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 1024;
/// `VIRTIO_F_VERSION_1`: a modern device only.
const VERSION_1: u64 = 1 << 32;

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
}

/// A queue the driver enabled, with the eventfds that connect it to the guest.
pub struct ActiveQueue<'a> {
    pub layout: RingLayout,
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
    /// Queues handed to virtiofsd since the last DRIVER_OK.
    started: Vec<usize>,
    // Dropped last: virtiofsd is stopped after the connection is closed.
    _daemon: Virtiofsd,
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
        let features = connection
            .handshake(VERSION_1, queues as usize)
            .map_err(frontend)?;
        Ok(Self {
            share,
            connection,
            features,
            started: Vec::new(),
            _daemon: daemon,
        })
    }

    /// virtio device ID (26).
    pub fn device_type(&self) -> u16 {
        crate::fs::DEVICE_ID
    }

    /// Features to offer the driver: virtiofsd's, without the vhost-user-only bit.
    pub fn features(&self) -> u64 {
        self.features & !crate::frontend::PROTOCOL_FEATURES_BIT
    }

    /// Maximum size of each queue: high-priority, then the request queues.
    pub fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; REQUEST_QUEUES as usize + 1]
    }

    /// The configuration space: the tag and the number of request queues.
    pub fn config(&self) -> [u8; CONFIG_LEN] {
        self.share.config_space(REQUEST_QUEUES)
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
        for (index, queue) in queues {
            self.connection
                .start_queue(*index, &queue.layout, queue.kick, queue.call)
                .map_err(frontend)?;
            self.started.push(*index);
        }
        Ok(())
    }

    /// The driver reset the device: take the queues back from virtiofsd.
    pub fn reset(&mut self) -> Result<(), FsDeviceError> {
        for index in std::mem::take(&mut self.started) {
            self.connection
                .stop_queue(index)
                .map_err(|source| FsDeviceError::Frontend {
                    tag: self.share.tag.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}
