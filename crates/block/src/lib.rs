//! Disk image formats behind one trait.
//!
//! Every driver implements [`DiskImage`]: byte-addressed reads and writes of the *virtual*
//! disk, flush, discard / write-zeroes and an allocation map. Images are untrusted input:
//! drivers validate every header and metadata field before using it and return
//! [`Error`] values that name the problem; they never panic on bad bytes and never allocate
//! sizes taken from a header without bounding them first.

mod budget;
mod error;
mod format;
mod image_file;
mod open;
mod qcow2;
mod raw;
mod reference;
#[cfg(test)]
mod test_support;
mod vdi;
mod vhd;
mod vhdx;
mod vmdk;
pub mod workload;

pub use budget::CHAIN_METADATA_BUDGET;
pub use error::{Error, Result};
pub use format::Format;
pub use open::{
    check, check_disk_path, create, detect, file_kind_name, open, open_backing, CheckReport,
    CreateOptions, OpenOptions, MAX_CHAIN_DEPTH,
};
pub use reference::{resolve_backing, resolve_reference};
pub use vmdk::write_stream_optimized;

/// Whether a byte range of the virtual disk is backed by data in this image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Data stored in this image file.
    Data,
    /// Reads as zeroes and takes no data space (hole, zero cluster, unallocated block
    /// without a backing file).
    Zero,
    /// Not stored here: reads come from the backing image.
    Backing,
}

/// One run of the allocation map: `len` bytes at virtual offset `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub state: Allocation,
}

/// A virtual disk stored in an image file of some format.
///
/// Offsets and lengths are in bytes of the virtual disk. Requests that reach past
/// [`DiskImage::size`] fail with [`Error::OutOfRange`]; writes to a read-only image fail
/// with [`Error::ReadOnly`].
pub trait DiskImage: Send {
    /// The image format of this file.
    fn format(&self) -> Format;
    /// Virtual size in bytes.
    fn size(&self) -> u64;
    /// Whether the image was opened read-only.
    fn read_only(&self) -> bool;
    /// Fill `buf` from virtual offset `offset`.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Write `buf` at virtual offset `offset`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()>;
    /// Make every completed write durable (metadata and data; fdatasync or stronger).
    fn flush(&mut self) -> Result<()>;
    /// The range may be deallocated; later reads return zeroes or the backing file's data
    /// is *not* exposed (reads return zeroes).
    fn discard(&mut self, offset: u64, len: u64) -> Result<()>;
    /// The range reads as zeroes afterwards; deallocates where the format allows it.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()>;
    /// Allocation map of `[offset, offset + len)`, as contiguous extents in order.
    fn allocation(&mut self, offset: u64, len: u64) -> Result<Vec<Extent>>;
    /// Bytes this image file (not its backing chain) occupies on the host file system.
    fn allocated_bytes(&self) -> Result<u64>;
    /// The backing image, for formats with backing files / differencing disks.
    fn backing(&self) -> Option<&dyn DiskImage> {
        None
    }
    /// Path of this image file, as given when it was opened.
    fn path(&self) -> &std::path::Path;
    /// Every host file this image opened, as opened: its own (a VMDK descriptor and each
    /// extent) then those of its backing chain, top first. For callers that must vet every
    /// file an image reaches (import, snapshot load).
    fn files(&self) -> Vec<std::path::PathBuf> {
        let mut out = vec![self.path().to_path_buf()];
        if let Some(backing) = self.backing() {
            out.extend(backing.files());
        }
        out
    }
    /// Change the virtual size. Growing is always allowed where the format supports it;
    /// shrinking only when no data of this image lies beyond the new size.
    fn resize(&mut self, new_size: u64) -> Result<()> {
        let _ = new_size;
        Err(Error::Unsupported {
            path: self.path().to_path_buf(),
            format: self.format(),
            feature: "resize".into(),
        })
    }
    /// Format-specific facts for `vessel disk info` (name, value), e.g. cluster size.
    fn details(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}
