//! Guest memory a vhost-user backend can map: one memfd holding every RAM range, mapped
//! shared, sealed against shrinking and growing.
//!
//! A vhost-user device (virtio-fs served by `virtiofsd`) receives guest memory as file
//! descriptors in SET_MEM_TABLE and maps them itself, so anonymous memory will not do.
//! The seals are what vessel's own vhost-user backends demand (and QEMU's
//! `memory-backend-memfd` sets): a file that could shrink after the backend mapped it
//! would make the backend fault (SIGBUS) on access. Each range lies at its own offset
//! in the file; [`vm_memory`] records file and offset per region, which is where the
//! frontend finds them.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

use arch::GuestMemory;
use vm_memory::{FileOffset, GuestAddress};

/// Errors creating shared guest memory.
#[derive(Debug, thiserror::Error)]
pub enum SharedMemoryError {
    #[error("memfd_create for guest memory: {0}")]
    Create(#[source] std::io::Error),
    #[error("sizing the guest memory memfd to {size} bytes: {source}")]
    Size {
        size: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("sealing the guest memory memfd: {0}")]
    Seal(#[source] std::io::Error),
    #[error("guest memory ranges add up to more than the address space")]
    TooLarge,
    #[error("mapping the guest memory memfd: {0}")]
    Map(#[source] vm_memory::mmap::FromRangesError),
}

/// Guest memory of `ranges` (guest address, size) backed by one sealed memfd.
pub fn shared_guest_memory(
    ranges: &[(GuestAddress, usize)],
) -> Result<GuestMemory, SharedMemoryError> {
    let total = ranges
        .iter()
        .try_fold(0u64, |sum, &(_, size)| sum.checked_add(size as u64))
        .ok_or(SharedMemoryError::TooLarge)?;
    let file = memfd()?;
    file.set_len(total)
        .map_err(|source| SharedMemoryError::Size {
            size: total,
            source,
        })?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    // SAFETY: F_ADD_SEALS on a descriptor `file` owns; no memory is passed.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(SharedMemoryError::Seal(std::io::Error::last_os_error()));
    }
    let mut offset = 0u64;
    let mut with_files = Vec::with_capacity(ranges.len());
    for &(addr, size) in ranges {
        let clone = file.try_clone().map_err(SharedMemoryError::Create)?;
        with_files.push((addr, size, Some(FileOffset::new(clone, offset))));
        offset += size as u64;
    }
    GuestMemory::from_ranges_with_files(with_files).map_err(SharedMemoryError::Map)
}

fn memfd() -> Result<File, SharedMemoryError> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: the name is a NUL-terminated literal; flags are plain constants.
    let fd = unsafe { libc::memfd_create(c"vessel-guest-ram".as_ptr(), flags) };
    if fd < 0 {
        return Err(SharedMemoryError::Create(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a new descriptor nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn ranges_share_one_sealed_memfd_at_their_offsets() {
        let ranges = [
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x100000), 0x20000),
        ];
        let mem = shared_guest_memory(&ranges).unwrap();
        mem.write_obj(0xabcd_u32, GuestAddress(0x100010)).unwrap();
        let regions: Vec<_> = mem.iter().collect();
        assert_eq!(regions.len(), 2);
        let first = regions[0].file_offset().unwrap();
        let second = regions[1].file_offset().unwrap();
        assert_eq!((first.start(), second.start()), (0, 0x10000));
        // The same file: what the guest wrote is in it at the second range's offset.
        let mut word = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(first.file(), &mut word, 0x10010).unwrap();
        assert_eq!(u32::from_le_bytes(word), 0xabcd);
        // SAFETY: F_GET_SEALS on a descriptor the region owns.
        let seals = unsafe { libc::fcntl(first.file().as_raw_fd(), libc::F_GET_SEALS) };
        assert_ne!(seals & libc::F_SEAL_SHRINK, 0);
        assert_ne!(seals & libc::F_SEAL_GROW, 0);
        assert!(
            first.file().set_len(0x1000).is_err(),
            "shrinking is refused"
        );
    }
}
