//! virtio-blk (virtio 1.2 §5.2) over a [`block::DiskImage`].

mod bounce;
mod request;
pub mod written;

use std::sync::Arc;

use block::DiskImage;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};
use vm_memory::GuestMemoryMmap;

use crate::chain_io::split;
use crate::device::VirtioDevice;
use crate::drain::drain_admitted;
use crate::queue::{Queue, QueueError, Segment};
use crate::rate_limiter::RateLimiterHandle;
use bounce::BounceBuffer;
use written::WrittenChunks;

/// Bytes per virtio-blk sector (fixed by the spec, whatever `blk_size` says).
pub const SECTOR_SIZE: u64 = 512;
/// Length of the serial returned by GET_ID.
pub const SERIAL_LEN: usize = 20;
/// Default (and maximum) queue size.
pub const QUEUE_SIZE: u16 = 256;
/// Segments per discard / write-zeroes request.
pub const MAX_DISCARD_SEGMENTS: u32 = 16;
/// Sectors per discard / write-zeroes segment.
pub const MAX_DISCARD_SECTORS: u32 = 0x0040_0000;
/// Largest data transfer of one read or write request (bigger ones fail with IOERR).
pub const MAX_REQUEST_BYTES: u64 = 32 << 20;
const CONFIG_LEN: usize = 60;
const DEVICE_TYPE_BLOCK: u16 = 2;

/// Why a disk cannot take another image at run time.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockSwapError {
    #[error("the new image must be read-only exactly when the old one is")]
    ReadOnlyMismatch,
    #[error("the new image's size ({0} bytes) is not a multiple of 512")]
    Size(u64),
    #[error("cannot flush the image being replaced (it stays in use): {0}")]
    Flush(String),
}

/// A virtio block device.
pub struct Block {
    disk: Box<dyn DiskImage>,
    serial: [u8; SERIAL_LEN],
    config: [u8; CONFIG_LEN],
    features: u64,
    queue_sizes: [u16; 1],
    capacity_bytes: u64,
    bounce: BounceBuffer,
    segs: Vec<Segment>,
    /// Scratch list of the data part of a request's writable buffers.
    data_segs: Vec<Segment>,
    /// Whether guest FLUSH requests reach the disk (Firecracker's `Writeback` cache type).
    honour_flush: bool,
    /// Requests wait while it is short of bytes or operations.
    rate_limiter: Option<RateLimiterHandle>,
    /// While a migration copies the disk: the chunks the guest changed.
    written: Option<Arc<WrittenChunks>>,
}

impl Block {
    /// A device serving `disk`, answering GET_ID with `serial` (truncated to 20 bytes).
    /// Read-only disks get VIRTIO_BLK_F_RO and no discard / write-zeroes.
    pub fn new(disk: Box<dyn DiskImage>, serial: &str) -> Self {
        let read_only = disk.read_only();
        let capacity = disk.size() / SECTOR_SIZE;
        let mut features = (1u64 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE)
            | (1 << VIRTIO_BLK_F_FLUSH);
        if read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        } else {
            features |= (1 << VIRTIO_BLK_F_DISCARD) | (1 << VIRTIO_BLK_F_WRITE_ZEROES);
        }
        let mut config = [0u8; CONFIG_LEN];
        let mut put = |at: usize, bytes: &[u8]| config[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &capacity.to_le_bytes());
        put(12, &u32::from(QUEUE_SIZE - 2).to_le_bytes()); // seg_max
        put(20, &(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
        put(34, &1u16.to_le_bytes()); // num_queues
        put(36, &MAX_DISCARD_SECTORS.to_le_bytes());
        put(40, &MAX_DISCARD_SEGMENTS.to_le_bytes());
        put(44, &1u32.to_le_bytes()); // discard_sector_alignment
        put(48, &MAX_DISCARD_SECTORS.to_le_bytes()); // max_write_zeroes_sectors
        put(52, &MAX_DISCARD_SEGMENTS.to_le_bytes()); // max_write_zeroes_seg
        put(56, &[1]); // write_zeroes_may_unmap
        let mut id = [0u8; SERIAL_LEN];
        let n = serial.len().min(SERIAL_LEN);
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        Self {
            disk,
            serial: id,
            config,
            features,
            queue_sizes: [QUEUE_SIZE],
            capacity_bytes: capacity * SECTOR_SIZE,
            bounce: BounceBuffer::new(),
            segs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            data_segs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            honour_flush: true,
            rate_limiter: None,
            written: None,
        }
    }

    /// Serves `disk` from now on instead of the current image (flushed first: a failed
    /// flush keeps the current image and fails the swap), with its
    /// capacity in the configuration space; the caller signals the configuration change.
    /// The new image must match the old one in being read-only, since the driver
    /// negotiated VIRTIO_BLK_F_RO with the old one.
    pub fn replace_disk(&mut self, disk: Box<dyn DiskImage>) -> Result<(), BlockSwapError> {
        if disk.read_only() != self.disk.read_only() {
            return Err(BlockSwapError::ReadOnlyMismatch);
        }
        if !disk.size().is_multiple_of(SECTOR_SIZE) {
            return Err(BlockSwapError::Size(disk.size()));
        }
        // What the guest wrote must be in the old image before anything else (a fork's
        // overlay over it) may read it.
        self.disk
            .flush()
            .map_err(|e| BlockSwapError::Flush(e.to_string()))?;
        let capacity = disk.size() / SECTOR_SIZE;
        self.config[..8].copy_from_slice(&capacity.to_le_bytes());
        self.capacity_bytes = capacity * SECTOR_SIZE;
        self.disk = disk;
        if let Some(written) = &self.written {
            written.mark_all();
        }
        Ok(())
    }

    /// The disk's size in bytes, as the guest sees it.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// From now on (`Some`) every write, discard and write-zeroes marks the chunks it
    /// touched in `written`, done or failed; `None` stops it.
    pub fn log_writes(&mut self, written: Option<Arc<WrittenChunks>>) {
        self.written = written;
    }

    /// Reads the image between requests (a migration copying the disk).
    pub fn read_image(&mut self, buf: &mut [u8], offset: u64) -> block::Result<()> {
        self.disk.read_at(buf, offset)
    }

    /// Which parts of `len` bytes at `offset` hold data, read as zeroes or come from a
    /// backing file.
    pub fn image_allocation(&mut self, offset: u64, len: u64) -> block::Result<Vec<block::Extent>> {
        self.disk.allocation(offset, len)
    }

    fn mark_written(&self, offset: u64, len: u64) {
        if let Some(written) = &self.written {
            written.mark(offset, len);
        }
    }

    /// Requests go through `limiter` (one operation each, and the bytes they move).
    pub fn with_rate_limiter(mut self, limiter: RateLimiterHandle) -> Self {
        self.rate_limiter = Some(limiter);
        self
    }

    /// Firecracker's `Unsafe` cache type: VIRTIO_BLK_F_FLUSH is not offered and a FLUSH the
    /// guest sends anyway completes without syncing the image, so guest writes stay in the
    /// host's page cache until the host writes them back (or the VMM stops).
    pub fn ignoring_flush(mut self) -> Self {
        self.features &= !(1u64 << VIRTIO_BLK_F_FLUSH);
        self.honour_flush = false;
        self
    }
}

/// The data bytes a request moves, as a rate limiter counts them: its buffers less the
/// 16-byte header and the status byte (0 for a flush, the data of a read or write).
fn request_bytes(segs: &[Segment]) -> u64 {
    let (readable, writable) = split(segs);
    let sum = |s: &[Segment]| s.iter().map(|s| u64::from(s.len)).sum::<u64>();
    (sum(readable) + sum(writable)).saturating_sub(17)
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE_BLOCK
    }
    fn pci_class(&self) -> (u8, u8) {
        (0x01, 0x80)
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        self.features
    }
    fn config_len(&self) -> usize {
        CONFIG_LEN
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let start = offset as usize;
        if let Some(src) = start
            .checked_add(data.len())
            .and_then(|end| self.config.get(start..end))
        {
            data.copy_from_slice(src);
        }
    }
    fn sync(&mut self) {
        let _ = self.disk.flush();
    }
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
    fn process_queue(
        &mut self,
        _index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        let mut segs = std::mem::take(&mut self.segs);
        let limiter = self.rate_limiter.clone();
        let admit = |segs: &[Segment]| match &limiter {
            Some(limiter) => limiter.consume(request_bytes(segs)),
            None => true,
        };
        let result = drain_admitted(queue, mem, &mut segs, admit, |mem, chain| match chain {
            Ok(segs) => self.serve(mem, segs),
            Err(_) => 0,
        });
        self.segs = segs;
        result
    }
}
