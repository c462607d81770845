//! The frontend's dirty log (VHOST_USER_SET_LOG_BASE with VHOST_USER_PROTOCOL_F_LOG_SHMFD):
//! shared memory with one bit per guest-physical page, which the backend sets for every
//! page it writes (received data, used rings) while the frontend migrates the guest with
//! `VHOST_F_LOG_ALL` acked. The frontend reads and clears it; the backend only sets bits.
//!
//! The log is checked before it is mapped, as guest memory is (crate::memory): a regular
//! file or memfd, sealed against shrinking (else the frontend could truncate it and the
//! backend would die of SIGBUS on its next write), long enough for the area, at a page
//! aligned offset, and of a bounded size.

use std::fs::File;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

use vm_memory::mmap::MmapRegionError;
use vm_memory::{FileOffset, MmapRegion};

/// The largest log accepted: one bit per 4 KiB page of 16 TiB of guest-physical space.
pub const MAX_LOG_BYTES: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("dirty log of {0} bytes: it must be 1 to {MAX_LOG_BYTES} bytes")]
    Size(u64),
    #[error("dirty log offset {0:#x} is not page aligned")]
    Unaligned(u64),
    #[error("the dirty log's file cannot be inspected: {0}")]
    Stat(#[source] std::io::Error),
    #[error("the dirty log's fd is not a regular file or memfd")]
    NotAFile,
    #[error(
        "the dirty log's file is not sealed against shrinking (F_SEAL_SHRINK), so the \
         frontend could truncate it under the backend"
    )]
    NotSealed,
    #[error("dirty log {offset:#x}+{size:#x} goes past the end of its {file_len:#x}-byte file")]
    PastEnd {
        offset: u64,
        size: u64,
        file_len: u64,
    },
    #[error("mapping the dirty log: {0}")]
    Map(#[source] MmapRegionError),
}

/// The mapped log.
pub struct LogMemory {
    map: MmapRegion,
}

// SAFETY: the mapping is plain shared memory that is only accessed through atomics
// (`bytes`), so using it from several threads is sound.
unsafe impl Sync for LogMemory {}

impl LogMemory {
    /// Checks and maps `size` bytes of `file` at `offset`.
    pub fn map(file: File, size: u64, offset: u64) -> Result<Self, LogError> {
        if size == 0 || size > MAX_LOG_BYTES {
            return Err(LogError::Size(size));
        }
        if !offset.is_multiple_of(crate::memory::page_size()) {
            return Err(LogError::Unaligned(offset));
        }
        let meta = file.metadata().map_err(LogError::Stat)?;
        if !meta.is_file() {
            return Err(LogError::NotAFile);
        }
        if !crate::memory::sealed_against_shrinking(&file) {
            return Err(LogError::NotSealed);
        }
        let end = offset.checked_add(size);
        if end.is_none_or(|end| end > meta.len()) {
            return Err(LogError::PastEnd {
                offset,
                size,
                file_len: meta.len(),
            });
        }
        // `size` is at most MAX_LOG_BYTES: it fits a usize on 64-bit hosts.
        let len = usize::try_from(size).map_err(|_| LogError::Size(size))?;
        let map =
            MmapRegion::from_file(FileOffset::new(file, offset), len).map_err(LogError::Map)?;
        Ok(Self { map })
    }

    /// The log's bytes.
    pub fn bytes(&self) -> &[AtomicU8] {
        // SAFETY: the mapping is `size()` bytes, readable and writable, and lives as long
        // as `self`; AtomicU8 has the size and alignment of u8, and every access to this
        // shared memory from this process goes through these atomics.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU8>(), self.map.size()) }
    }
}

/// The log as [`dirty_log`] writes it.
pub(crate) struct SharedHandle(pub Arc<LogMemory>);

impl dirty_log::SharedLog for SharedHandle {
    fn bytes(&self) -> &[AtomicU8] {
        self.0.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A memfd of `len` bytes, sealed against shrinking when `sealed`.
    fn memfd(len: u64, sealed: bool) -> File {
        let name = c"vessel-test-log";
        // SAFETY: memfd_create with a valid C string; the result is checked.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING) };
        assert!(fd >= 0);
        // SAFETY: `fd` is a new descriptor owned by nobody else.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        file.set_len(len).unwrap();
        if sealed {
            // SAFETY: F_ADD_SEALS on a descriptor `file` owns.
            let r = unsafe {
                libc::fcntl(
                    std::os::fd::AsRawFd::as_raw_fd(&file),
                    libc::F_ADD_SEALS,
                    libc::F_SEAL_SHRINK,
                )
            };
            assert_eq!(r, 0);
        }
        file
    }

    #[test]
    fn a_sealed_log_is_mapped_and_its_bits_reach_the_file() {
        let file = memfd(8192, true);
        let reader = file.try_clone().unwrap();
        let log = LogMemory::map(file, 4096, 4096).unwrap();
        assert_eq!(log.bytes().len(), 4096);
        log.bytes()[3].fetch_or(0x80, std::sync::atomic::Ordering::AcqRel);
        let mut back = vec![0u8; 8192];
        std::os::unix::fs::FileExt::read_exact_at(&reader, &mut back, 0).unwrap();
        assert_eq!(back[4096 + 3], 0x80);
        assert!(back[..4096].iter().all(|&b| b == 0));
    }

    #[test]
    fn bad_logs_are_refused_with_the_reason() {
        let refused = |file: File, size: u64, offset: u64| {
            LogMemory::map(file, size, offset)
                .err()
                .expect("refused")
                .to_string()
        };
        assert!(refused(memfd(4096, true), 0, 0).contains("1 to"));
        assert!(refused(memfd(4096, true), MAX_LOG_BYTES + 1, 0).contains("1 to"));
        assert!(refused(memfd(8192, true), 4096, 100).contains("page aligned"));
        assert!(refused(memfd(4096, false), 4096, 0).contains("F_SEAL_SHRINK"));
        assert!(refused(memfd(4096, true), 4096, 4096).contains("past the end"));
        assert!(refused(memfd(4096, true), 4096, !4095).contains("past the end"));
        let dir = tempfile::tempdir().unwrap();
        let mut plain = File::create(dir.path().join("log")).unwrap();
        plain.write_all(&[0; 4096]).unwrap();
        assert!(refused(plain, 4096, 0).contains("F_SEAL_SHRINK"));
        let directory = File::open(dir.path()).unwrap();
        assert!(refused(directory, 4096, 0).contains("not a regular file"));
    }
}
