//! The sender's side of `--copy-storage`: every virtio-blk disk is streamed to the
//! receiver while the guest runs, and the chunks the guest writes meanwhile are sent again,
//! in rounds with the dirty memory, the last of them while the queues are frozen. The disks
//! are read through their device models, between requests (the device lock), so every
//! image format reads as the guest sees it.

use std::sync::Arc;

use virtio::blk::written::{self, WrittenChunks, CHUNK_BYTES};
use virtio::blk::Block;

use super::send::MemoryWriter;
use super::MigrationError;
use crate::device_control::DeviceControls;

/// Bytes read from a disk under its device lock at a time (guest requests wait meanwhile).
const READ_BYTES: u64 = 1 << 20;
/// The first pass asks the image where its data is this many bytes at a time.
const MAP_WINDOW: u64 = 64 << 20;

/// The disks being copied, their writes logged until this is dropped.
pub(super) struct DiskCopy<'a> {
    controls: &'a DeviceControls,
    logs: Vec<Arc<WrittenChunks>>,
    buf: Vec<u8>,
}

/// The chunks of each disk written since the last look.
pub(super) type DiskDirty = Vec<Vec<u64>>;

fn with_block<R>(
    controls: &DeviceControls,
    index: usize,
    f: impl FnOnce(&mut Block) -> R,
) -> Result<R, MigrationError> {
    let disk = controls
        .disks
        .get(index)
        .ok_or_else(|| MigrationError::Unsupported(format!("it has no disk {index}")))?;
    disk.processor.with_device(|device| {
        device
            .as_any_mut()
            .and_then(|any| any.downcast_mut::<Block>())
            .map(f)
            .ok_or_else(|| {
                MigrationError::Unsupported(format!(
                    "its disk {index} is not a virtio-blk device vessel serves"
                ))
            })
    })
}

impl<'a> DiskCopy<'a> {
    /// Logs every disk's writes from now on.
    pub fn start(controls: &'a DeviceControls) -> Result<Self, MigrationError> {
        let mut copy = Self {
            controls,
            logs: Vec::new(),
            buf: Vec::new(),
        };
        for index in 0..controls.disks.len() {
            let log = with_block(controls, index, |block| {
                let log = Arc::new(WrittenChunks::new(block.capacity_bytes()));
                block.log_writes(Some(log.clone()));
                log
            })?;
            copy.logs.push(log);
        }
        Ok(copy)
    }

    /// Each disk's size in bytes, for the receiver.
    pub fn sizes(&self) -> Vec<u64> {
        self.logs.iter().map(|l| l.size()).collect()
    }

    /// The chunks written since the last look; the logs start afresh.
    pub fn take(&self) -> DiskDirty {
        self.logs.iter().map(|l| l.take()).collect()
    }

    /// Bytes the chunks in `dirty` cover.
    pub fn bytes(dirty: &DiskDirty) -> u64 {
        dirty.iter().map(|m| written::count(m) * CHUNK_BYTES).sum()
    }

    /// The first pass: every disk whole; ranges the image reads as zeroes go as such
    /// without being read.
    pub fn send_all(&mut self, out: &mut MemoryWriter) -> Result<(), MigrationError> {
        for (index, size) in self.sizes().into_iter().enumerate() {
            let mut at = 0;
            while at < size {
                let len = MAP_WINDOW.min(size - at);
                let extents = with_block(self.controls, index, |b| b.image_allocation(at, len))?
                    .map_err(|e| MigrationError::DiskCopy(format!("disk {index}: {e}")))?;
                for extent in extents {
                    if extent.state == block::Allocation::Zero {
                        out.disk_zero(index as u32, extent.offset, extent.len)?;
                    } else {
                        self.send_range(out, index, extent.offset, extent.len)?;
                    }
                }
                at += len;
            }
        }
        Ok(())
    }

    /// Sends the chunks set in `dirty` (merged with `also`, an earlier look not sent yet).
    pub fn send_dirty(
        &mut self,
        out: &mut MemoryWriter,
        dirty: &DiskDirty,
        also: Option<&DiskDirty>,
    ) -> Result<(), MigrationError> {
        for (index, map) in dirty.iter().enumerate() {
            let mut map = map.clone();
            if let Some(earlier) = also.and_then(|a| a.get(index)) {
                for (a, b) in map.iter_mut().zip(earlier) {
                    *a |= *b;
                }
            }
            let size = self.logs.get(index).map_or(0, |l| l.size());
            for (offset, len) in written::ranges(&map, size, READ_BYTES) {
                self.send_range(out, index, offset, len)?;
            }
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` of disk `index`, a piece at a time, and sends them
    /// (pieces of zeroes as zero ranges).
    fn send_range(
        &mut self,
        out: &mut MemoryWriter,
        index: usize,
        offset: u64,
        len: u64,
    ) -> Result<(), MigrationError> {
        let end = offset.saturating_add(len);
        let mut at = offset;
        while at < end {
            let n = READ_BYTES.min(end - at);
            let mut buf = std::mem::take(&mut self.buf);
            buf.resize(n as usize, 0);
            let read = with_block(self.controls, index, |b| b.read_image(&mut buf, at))?;
            let sent = read
                .map_err(|e| MigrationError::DiskCopy(format!("disk {index}: {e}")))
                .and_then(|()| {
                    if buf.chunks(4096).all(super::send::is_zero) {
                        out.disk_zero(index as u32, at, n)
                    } else {
                        out.disk_data(index as u32, at, &buf)
                    }
                });
            self.buf = buf;
            sent?;
            at += n;
        }
        Ok(())
    }
}

impl Drop for DiskCopy<'_> {
    fn drop(&mut self) {
        for index in 0..self.logs.len() {
            let _ = with_block(self.controls, index, |block| block.log_writes(None));
        }
    }
}
