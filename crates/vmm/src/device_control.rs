//! Changing the devices of a running VM: the rate limits of a disk or a NIC, the port
//! forwards of a `nat` NIC (vessel's extension), and the image behind a disk (Firecracker's `PATCH /drives/{id}` and
//! `PATCH /network-interfaces/{id}`). Disks and NICs are addressed by their index in
//! [`crate::VmConfig`].

use virtio::blk::{Block, BlockSwapError};
use virtio::rate_limiter::{BucketConfig, RateLimiterHandle};
use virtio::QueueProcessor;

use crate::control::VmHandle;
use crate::DiskConfig;

#[derive(Debug, thiserror::Error)]
pub enum DeviceControlError {
    #[error("the VM has no disk {0}")]
    NoSuchDisk(usize),
    #[error("the VM has no network interface {0}")]
    NoSuchNic(usize),
    #[error("cannot open the disk image {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: block::Error,
    },
    #[error("cannot use {path} as the new disk image: {source}")]
    Swap {
        path: std::path::PathBuf,
        #[source]
        source: BlockSwapError,
    },
    #[error("disk {0} is not a virtio-blk device")]
    NotABlockDevice(usize),
    #[error(
        "network interface {0} is not in nat mode: only nat interfaces take run-time port forwards"
    )]
    NotNat(usize),
    #[error(transparent)]
    Forward(#[from] net::forward_relay::RelayError),
}

/// A disk's run-time controls.
pub(crate) struct DiskControl {
    pub limiter: RateLimiterHandle,
    pub processor: QueueProcessor,
}

/// A NIC's run-time controls.
pub(crate) struct NicControl {
    pub rx: RateLimiterHandle,
    pub tx: RateLimiterHandle,
    /// The run-time forwards of a `nat` NIC.
    pub forwards: Option<net::forward_nic::ForwardControl>,
}

/// The run-time controls of a VM's disks and NICs, in configuration order.
#[derive(Default)]
pub(crate) struct DeviceControls {
    pub disks: Vec<DiskControl>,
    pub nics: Vec<NicControl>,
}

/// A bucket change: `None` keeps the bucket, a bucket that limits nothing removes it.
pub type BucketUpdate = Option<BucketConfig>;

impl VmHandle {
    fn disk(&self, index: usize) -> Result<&DiskControl, DeviceControlError> {
        self.devices
            .disks
            .get(index)
            .ok_or(DeviceControlError::NoSuchDisk(index))
    }

    /// Sets new limits on disk `index` (bytes, operations).
    pub fn update_disk_limits(
        &self,
        index: usize,
        bandwidth: BucketUpdate,
        ops: BucketUpdate,
    ) -> Result<(), DeviceControlError> {
        self.disk(index)?.limiter.update(bandwidth, ops);
        Ok(())
    }

    fn nic_forwards(
        &self,
        index: usize,
    ) -> Result<&net::forward_nic::ForwardControl, DeviceControlError> {
        self.devices
            .nics
            .get(index)
            .ok_or(DeviceControlError::NoSuchNic(index))?
            .forwards
            .as_ref()
            .ok_or(DeviceControlError::NotNat(index))
    }

    /// Forwards `forward` (TCP) on NIC `index` from `listener`, a socket the caller bound
    /// and listens on where the forward says (the VMM opens no sockets).
    pub fn add_forward(
        &self,
        index: usize,
        forward: net::Forward,
        listener: std::os::fd::OwnedFd,
    ) -> Result<(), DeviceControlError> {
        Ok(self.nic_forwards(index)?.add(forward, listener)?)
    }

    /// Removes NIC `index`'s run-time forward on `host_port`.
    pub fn remove_forward(
        &self,
        index: usize,
        host_port: u16,
    ) -> Result<net::Forward, DeviceControlError> {
        Ok(self.nic_forwards(index)?.remove(host_port)?)
    }

    /// NIC `index`'s run-time forwards.
    pub fn forwards(
        &self,
        index: usize,
    ) -> Result<Vec<net::forward_relay::LiveForward>, DeviceControlError> {
        Ok(self.nic_forwards(index)?.list())
    }

    /// Sets new limits on NIC `index`: `rx` and `tx` are (bytes, operations).
    pub fn update_nic_limits(
        &self,
        index: usize,
        rx: (BucketUpdate, BucketUpdate),
        tx: (BucketUpdate, BucketUpdate),
    ) -> Result<(), DeviceControlError> {
        let nic = self
            .devices
            .nics
            .get(index)
            .ok_or(DeviceControlError::NoSuchNic(index))?;
        nic.rx.update(rx.0, rx.1);
        nic.tx.update(tx.0, tx.1);
        Ok(())
    }

    /// Puts the image `disk` names behind disk `index`, opened and checked as at start-up
    /// (no symbolic link, a regular file or block device, its format detected unless
    /// given), and tells the guest its capacity may have changed. Returns the image's
    /// format.
    pub fn replace_disk(
        &self,
        index: usize,
        disk: &DiskConfig,
    ) -> Result<block::Format, DeviceControlError> {
        let control = self.disk(index)?;
        let image = open_disk(disk).map_err(|source| DeviceControlError::Open {
            path: disk.path.clone(),
            source,
        })?;
        let (format, size) = (image.format(), image.size());
        let swapped = control.processor.with_device(|device| {
            let block = device
                .as_any_mut()
                .and_then(|any| any.downcast_mut::<Block>())
                .ok_or(DeviceControlError::NotABlockDevice(index))?;
            block
                .replace_disk(image)
                .map_err(|source| DeviceControlError::Swap {
                    path: disk.path.clone(),
                    source,
                })
        });
        swapped?;
        control.processor.signal_config_change();
        tracing::info!(
            "disk {index}: now {} ({format:?}, {} bytes)",
            disk.path.display(),
            size
        );
        Ok(format)
    }
}

/// Opens a disk image as the VM's start-up does.
pub(crate) fn open_disk(disk: &DiskConfig) -> block::Result<Box<dyn block::DiskImage>> {
    let opts = block::OpenOptions {
        read_only: disk.read_only,
        format: disk.format,
        allow_external_backing: disk.allow_external_backing,
    };
    block::open(&disk.path, &opts)
}
