//! The receiver's side of `--copy-storage`: where the sender's disks are written. The
//! sender lists its disks' sizes (`Disks`) right after the machine, then streams their
//! contents (`DiskData`, `DiskZero`) between memory frames; the receiver writes them into
//! images of its own — never to paths the stream names — checked to be writable and of the
//! same size, and flushes them before the VM is built on them.

use std::io::Read;

use block::DiskImage;

use super::wire::{self, Header};
use super::MigrationError;
use crate::snapshot::MachineState;

/// Opens the images a receiver writes the arriving disks into: one per disk of the
/// machine, in its order.
pub type OpenTargets<'a> =
    &'a mut dyn FnMut(&MachineState) -> Result<Vec<Box<dyn DiskImage>>, String>;

/// How the receiver comes by the VM's disks.
pub enum Storage<'a> {
    /// Shared storage: the VM is built on the images its state (or the receiver's
    /// definition) names, as the sender left them. A sender that streams its disks is
    /// refused.
    Shared,
    /// The sender streams every disk (`--copy-storage`) into the images this opens. A
    /// sender that does not is refused.
    Copied(OpenTargets<'a>),
}

/// The images being written, with what the stream carried so far.
pub(super) struct DiskTargets {
    images: Vec<Box<dyn DiskImage>>,
    buf: Vec<u8>,
    /// Disk bytes the stream carried (zero ranges not counted).
    pub bytes: u64,
}

fn copy_err(e: impl std::fmt::Display) -> MigrationError {
    MigrationError::DiskCopy(e.to_string())
}

impl DiskTargets {
    /// Opens the targets for `machine`'s disks, whose sizes the sender gave as `sizes`.
    pub fn open(
        open: OpenTargets,
        machine: &MachineState,
        sizes: &[u64],
    ) -> Result<Self, MigrationError> {
        if sizes.len() != machine.disks.len() {
            return Err(copy_err(format!(
                "the sender lists {} disks, its machine has {}",
                sizes.len(),
                machine.disks.len()
            )));
        }
        let images = open(machine).map_err(MigrationError::DiskCopy)?;
        if images.len() != sizes.len() {
            return Err(copy_err(format!(
                "{} disks arrive, this receiver has {} to write them into",
                sizes.len(),
                images.len()
            )));
        }
        for (index, (image, &size)) in images.iter().zip(sizes).enumerate() {
            if image.read_only() {
                return Err(copy_err(format!(
                    "disk {index}: {} is read-only here",
                    image.path().display()
                )));
            }
            if image.size() != size {
                return Err(copy_err(format!(
                    "disk {index}: {} holds {} bytes, the arriving disk {size}: create it with that size",
                    image.path().display(),
                    image.size()
                )));
            }
        }
        Ok(Self {
            images,
            buf: Vec::new(),
            bytes: 0,
        })
    }

    /// The image of disk `disk`, if `len` bytes at `offset` lie inside it.
    fn target(
        &mut self,
        disk: u32,
        offset: u64,
        len: u64,
    ) -> Result<&mut Box<dyn DiskImage>, MigrationError> {
        let outside = || MigrationError::DiskRange { disk, offset, len };
        let image = self.images.get_mut(disk as usize).ok_or_else(outside)?;
        if offset.checked_add(len).is_none_or(|end| end > image.size()) {
            return Err(outside());
        }
        Ok(image)
    }

    /// A `DiskData` frame whose header was read: its bytes go to their disk.
    pub fn data(&mut self, r: &mut impl Read, header: Header) -> Result<(), MigrationError> {
        let (disk, offset) = wire::read_disk_prefix(r)?;
        let len = header.disk_data_len();
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(len as usize, 0);
        let result = r
            .read_exact(&mut buf)
            .map_err(|e| MigrationError::from(wire::WireError::from(e)))
            .and_then(|()| {
                let image = self.target(disk, offset, u64::from(len))?;
                image
                    .write_at(&buf, offset)
                    .map_err(|e| copy_err(format!("disk {disk}: {e}")))
            });
        self.buf = buf;
        self.bytes += u64::from(len);
        result
    }

    /// A `DiskZero` frame's payload: the range reads as zeroes.
    pub fn zero(&mut self, payload: &[u8]) -> Result<(), MigrationError> {
        let (disk, offset, len) = wire::parse_disk_zero(payload);
        let image = self.target(disk, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        image
            .write_zeroes(offset, len)
            .map_err(|e| copy_err(format!("disk {disk}: {e}")))
    }

    /// Flushes every image; they are closed when this is dropped, before the VM opens them.
    pub fn finish(mut self) -> Result<u64, MigrationError> {
        for (index, image) in self.images.iter_mut().enumerate() {
            image
                .flush()
                .map_err(|e| copy_err(format!("disk {index}: {e}")))?;
        }
        Ok(self.bytes)
    }
}
