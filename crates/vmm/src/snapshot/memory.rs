//! Guest RAM as one raw file: the regions in guest-address order, back to back.
//!
//! Saving writes every byte of every region. Loading maps the file copy-on-write
//! (`MAP_PRIVATE`) as guest RAM, each region at its offset in the file, so pages are read
//! from the file only when the guest (or the VMM) first touches them and the file is never
//! written; or, when the file could be changed by someone else, copies it into fresh
//! anonymous memory (docs/snapshots.md, "Loading guest memory").
//!
//! Generic over the regions' dirty bitmap, so a guest-memory type that tracks dirty pages
//! is loaded the same way.

use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use vm_memory::bitmap::{Bitmap, NewBitmap};
use vm_memory::mmap::MmapRegion;

use crate::page_map::{is_touched, PageMap, PAGE_SIZE};
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

use super::SnapshotError;

/// Set to `copy` to load snapshot memory by copying it even where it could be mapped (for
/// benchmarks comparing both ways); any other value is refused.
pub const MEMORY_LOAD_ENV: &str = "VESSEL_SNAPSHOT_MEMORY";

/// How a snapshot's memory file became guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLoad {
    /// Mapped copy-on-write from the file: pages are read on first touch.
    Mapped,
    /// Copied into anonymous memory, for the reason given.
    Copied(CopyReason),
}

/// Why a memory file was copied rather than mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyReason {
    /// The file belongs to another user than the one running vessel.
    OtherOwner,
    /// Its mode lets group or others write it (and so truncate it under the mapping).
    WritableByOthers,
    /// [`MEMORY_LOAD_ENV`] asked for a copy.
    Requested,
}

impl std::fmt::Display for CopyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CopyReason::OtherOwner => "the file belongs to another user",
            CopyReason::WritableByOthers => "group or others may write the file",
            CopyReason::Requested => "VESSEL_SNAPSHOT_MEMORY=copy",
        })
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Total bytes of guest RAM in `mem`.
pub fn memory_size<B: Bitmap>(mem: &GuestMemoryMmap<B>) -> u64 {
    mem.iter().map(|r| r.len()).sum()
}

/// Granule of the memory file's holes: a run of this many zero bytes is not written.
const SPARSE_CHUNK: usize = 64 * 1024;

/// Writes all guest RAM to `path`, a new file (nothing, not even a symlink, may be there);
/// returns the bytes written. RAM mapped from a memory file is read through its mapping:
/// the new file holds what the guest sees, whole. Zero chunks are left as holes (the file
/// reads the same; a mostly idle guest's memory file is written in a fraction of the time).
/// Chunks of anonymous RAM that `page_map` says were never touched are not even read.
pub(crate) fn save_memory<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
    page_map: Option<&PageMap>,
    path: &Path,
) -> Result<u64, SnapshotError> {
    let mut file = super::output::create_new(path)?;
    let mut offset = 0u64;
    let pages_per_chunk = (SPARSE_CHUNK as u64 / PAGE_SIZE).max(1);
    for region in mem.iter() {
        let len = region.len() as usize;
        let touched = crate::page_map::touched_pages(page_map, region);
        // SAFETY: the region maps `len` bytes at `as_ptr()` for as long as `mem` lives, and
        // every vCPU is paused, so nothing writes to it while it is read here.
        let bytes = unsafe { std::slice::from_raw_parts(region.as_ptr().cast_const(), len) };
        for (index, chunk) in bytes.chunks(SPARSE_CHUNK).enumerate() {
            let first = index as u64 * pages_per_chunk;
            let may_hold_data = touched
                .as_ref()
                .is_none_or(|t| (first..first + pages_per_chunk).any(|page| is_touched(t, page)));
            if may_hold_data && !is_zero(chunk) {
                file.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
                file.write_all(chunk).map_err(io_err(path))?;
            }
            offset += chunk.len() as u64;
        }
    }
    // The holes at the end count too.
    file.set_len(offset).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))?;
    Ok(memory_size(mem))
}

fn is_zero(bytes: &[u8]) -> bool {
    // SAFETY: u128 has no invalid bit patterns; align_to gives the aligned middle.
    let (head, middle, tail) = unsafe { bytes.align_to::<u128>() };
    head.iter().all(|&b| b == 0) && middle.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

/// Guest RAM of `ranges` (guest address, size) from the memory file at `path`: mapped
/// copy-on-write when only this user can change the file, else copied (see
/// [`load_mode`]). The file must be a regular file (a symlink is not followed) of exactly
/// the RAM's size.
pub fn restore_memory<B: NewBitmap>(
    ranges: &[(GuestAddress, usize)],
    path: &Path,
) -> Result<(GuestMemoryMmap<B>, MemoryLoad), SnapshotError> {
    restore_memory_with(ranges, path, requested_copy()?)
}

/// Guest RAM of `ranges` as a shared memfd (a VM with virtio-fs shares: virtiofsd maps
/// it too) holding a copy of the memory file at `path`.
pub fn restore_shared_memory(
    ranges: &[(GuestAddress, usize)],
    path: &Path,
) -> Result<arch::GuestMemory, SnapshotError> {
    let (file, meta) = open_memory_file(path)?;
    let expected: u64 = ranges.iter().map(|&(_, size)| size as u64).sum();
    if meta.len() != expected {
        return Err(SnapshotError::MemorySize {
            file: meta.len(),
            expected,
        });
    }
    let mem = crate::shared_memory::shared_guest_memory(ranges)
        .map_err(|e| map_err(path, e.to_string()))?;
    copy_into(&mem, file, path)?;
    tracing::info!(path = %path.display(), "snapshot memory copied into shared memory");
    Ok(mem)
}

/// [`restore_memory`], copying whatever the file if `copy_requested`.
fn restore_memory_with<B: NewBitmap>(
    ranges: &[(GuestAddress, usize)],
    path: &Path,
    copy_requested: bool,
) -> Result<(GuestMemoryMmap<B>, MemoryLoad), SnapshotError> {
    let (file, meta) = open_memory_file(path)?;
    let expected = ranges
        .iter()
        .try_fold(0u64, |sum, &(_, size)| sum.checked_add(size as u64))
        .ok_or_else(|| SnapshotError::Invalid("guest RAM ranges overflow".into()))?;
    if meta.len() != expected {
        return Err(SnapshotError::MemorySize {
            file: meta.len(),
            expected,
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let mode = load_mode(&meta, euid, copy_requested);
    let mem = match mode {
        MemoryLoad::Mapped => map_private(file, ranges, path)?,
        MemoryLoad::Copied(_) => {
            let mem = GuestMemoryMmap::<B>::from_ranges(ranges)
                .map_err(|e| map_err(path, e.to_string()))?;
            copy_into(&mem, file, path)?;
            mem
        }
    };
    match mode {
        MemoryLoad::Mapped => tracing::debug!(path = %path.display(), "snapshot memory mapped"),
        MemoryLoad::Copied(reason) => {
            tracing::info!(path = %path.display(), %reason, "snapshot memory copied")
        }
    }
    Ok((mem, mode))
}

/// Opens `path` for reading without following a symlink and without blocking on a FIFO;
/// refuses anything but a regular file.
fn open_memory_file(path: &Path) -> Result<(File, Metadata), SnapshotError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => SnapshotError::MemoryFile {
                path: path.to_path_buf(),
                reason: "is a symbolic link".into(),
            },
            _ => io_err(path)(e),
        })?;
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.file_type().is_file() {
        return Err(SnapshotError::MemoryFile {
            path: path.to_path_buf(),
            reason: "is not a regular file".into(),
        });
    }
    Ok((file, meta))
}

/// Whether [`MEMORY_LOAD_ENV`] asks for a copy.
fn requested_copy() -> Result<bool, SnapshotError> {
    match std::env::var_os(MEMORY_LOAD_ENV) {
        None => Ok(false),
        Some(v) if v == "copy" => Ok(true),
        Some(v) => Err(SnapshotError::Invalid(format!(
            "{MEMORY_LOAD_ENV}={} (only `copy` is understood)",
            v.to_string_lossy()
        ))),
    }
}

/// Mapped only when the file can change under the mapping by nobody but its owner, who is
/// the user running vessel (and root): a truncated file would take guest pages with it.
/// Group and other write bits cover POSIX ACLs too (the group bits are the ACL's mask).
pub fn load_mode(meta: &Metadata, euid: u32, copy_requested: bool) -> MemoryLoad {
    load_mode_of(meta.uid(), meta.mode(), euid, copy_requested)
}

fn load_mode_of(owner: u32, mode: u32, euid: u32, copy_requested: bool) -> MemoryLoad {
    if copy_requested {
        MemoryLoad::Copied(CopyReason::Requested)
    } else if owner != euid {
        MemoryLoad::Copied(CopyReason::OtherOwner)
    } else if mode & 0o022 != 0 {
        MemoryLoad::Copied(CopyReason::WritableByOthers)
    } else {
        MemoryLoad::Mapped
    }
}

fn map_err(path: &Path, reason: String) -> SnapshotError {
    SnapshotError::MemoryFile {
        path: path.to_path_buf(),
        reason: format!("cannot map it as guest memory: {reason}"),
    }
}

/// Each range mapped `MAP_PRIVATE` at its offset in `file` (the ranges back to back).
fn map_private<B: NewBitmap>(
    file: File,
    ranges: &[(GuestAddress, usize)],
    path: &Path,
) -> Result<GuestMemoryMmap<B>, SnapshotError> {
    let file = Arc::new(file);
    let mut offset = 0u64;
    let mut regions = Vec::with_capacity(ranges.len());
    for &(addr, size) in ranges {
        let mapping = MmapRegion::<B>::build(
            Some(FileOffset::from_arc(file.clone(), offset)),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .map_err(|e| map_err(path, e.to_string()))?;
        let region = GuestRegionMmap::new(mapping, addr)
            .ok_or_else(|| map_err(path, "a range ends beyond the address space".into()))?;
        regions.push(region);
        offset += size as u64;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| map_err(path, e.to_string()))
}

/// Reads `file` into `mem`, region after region (the sizes match: checked by the caller).
fn copy_into<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
    mut file: File,
    path: &Path,
) -> Result<(), SnapshotError> {
    for region in mem.iter() {
        let len = region.len() as usize;
        // SAFETY: the region maps `len` writable bytes at `as_ptr()` for as long as `mem`
        // lives, and it was just allocated, so nothing else accesses them.
        let bytes = unsafe { std::slice::from_raw_parts_mut(region.as_ptr(), len) };
        file.read_exact(bytes).map_err(io_err(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
