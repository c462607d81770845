//! A host file holding an image, with errors that name the file and format.
//!
//! Shared by the VDI, VHD, VMDK and VHDX drivers.

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::{Error, Format, Result};

/// Largest metadata table (block map, BAT, grain table set) a driver reads into memory.
pub(crate) const MAX_TABLE_BYTES: u64 = 512 << 20;

/// An open image file.
#[derive(Debug)]
pub(crate) struct ImageFile {
    file: File,
    path: PathBuf,
    format: Format,
}

impl ImageFile {
    /// Open an existing file, read-only or read-write.
    pub(crate) fn open(path: &Path, read_only: bool, format: Format) -> Result<Self> {
        let file = crate::open::open_image_file(path, read_only)?;
        Ok(ImageFile {
            file,
            path: path.to_path_buf(),
            format,
        })
    }

    /// Create a file for a new image; fails if `path` exists.
    pub(crate) fn create(path: &Path, format: Format) -> Result<Self> {
        let file = FsOpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(ImageFile {
            file,
            path: path.to_path_buf(),
            format,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `Error::Corrupt` for this file.
    pub(crate) fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            format: self.format,
            reason: reason.into(),
        }
    }

    /// `Error::Unsupported` for this file.
    pub(crate) fn unsupported(&self, feature: impl Into<String>) -> Error {
        Error::Unsupported {
            path: self.path.clone(),
            format: self.format,
            feature: feature.into(),
        }
    }

    /// `Error::Io` for this file.
    pub(crate) fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn len(&self) -> Result<u64> {
        Ok(self.file.metadata().map_err(|e| self.io(e))?.len())
    }

    /// Read exactly `buf.len()` bytes; a short file is reported as corrupt (`what` names
    /// the structure being read).
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
        match self.file.read_exact_at(buf, offset) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(self.corrupt(format!(
                "file is truncated: {what} at offset {offset} length {} is past the end",
                buf.len()
            ))),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Read `buf.len()` bytes; bytes past the end of the file read as zeroes.
    pub(crate) fn read_padded_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(())
    }

    pub(crate) fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file.write_all_at(buf, offset).map_err(|e| self.io(e))
    }

    pub(crate) fn set_len(&self, len: u64) -> Result<()> {
        self.file.set_len(len).map_err(|e| self.io(e))
    }

    /// fdatasync.
    pub(crate) fn sync_data(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| self.io(e))
    }

    /// Make `[offset, offset + len)` read as zeroes: punch a hole (keeping the file size),
    /// or write zeroes where the file system cannot punch.
    pub(crate) fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (Ok(off), Ok(l)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(Error::InvalidArgument(format!(
                "range {offset}+{len} too large"
            )));
        };
        // SAFETY: fallocate on a file descriptor we own, with plain integer arguments; it
        // does not touch our memory.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                l,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let zeroes = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64) as usize;
            self.write_all_at(&zeroes[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Reserve disk space for `[offset, offset + len)` (fixed / preallocated images).
    pub(crate) fn preallocate(&self, offset: u64, len: u64) -> Result<()> {
        let (Ok(off), Ok(l)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(Error::InvalidArgument(format!(
                "range {offset}+{len} too large"
            )));
        };
        if l == 0 {
            return Ok(());
        }
        // SAFETY: posix_fallocate on a file descriptor we own, integer arguments only.
        let rc = unsafe { libc::posix_fallocate(self.file.as_raw_fd(), off, l) };
        if rc != 0 {
            // Not every file system can reserve space; the file still has its full length.
            self.set_len(self.len()?.max(offset + len))?;
        }
        Ok(())
    }

    /// Bytes the file occupies on the host file system.
    pub(crate) fn allocated_bytes(&self) -> Result<u64> {
        Ok(self.file.metadata().map_err(|e| self.io(e))?.blocks() * 512)
    }
}

/// Fail with `Error::OutOfRange` unless `[offset, offset + len)` lies within `size`.
/// Split `len` bytes at virtual `offset` into pieces that stay inside one `block_size`
/// block: `(virtual offset, range of the caller's buffer)` in order.
pub(crate) fn block_pieces(
    offset: u64,
    len: usize,
    block_size: u64,
) -> impl Iterator<Item = (u64, std::ops::Range<usize>)> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let pos = offset + done as u64;
        let n = ((block_size - pos % block_size) as usize).min(len - done);
        let piece = (pos, done..done + n);
        done += n;
        Some(piece)
    })
}

pub(crate) fn check_range(offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfRange { offset, len, size }),
    }
}

/// Little-endian field readers over a byte slice whose length the caller has checked.
pub(crate) fn le_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
pub(crate) fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
pub(crate) fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}
pub(crate) fn be_u32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
pub(crate) fn be_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}

/// A random version-4 UUID (from the kernel's random source).
pub(crate) fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut u))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        u = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// Append `[offset, offset + len)` in `state` to an allocation map, merging with the last
/// extent when it continues it.
pub(crate) fn push_extent(
    map: &mut Vec<crate::Extent>,
    offset: u64,
    len: u64,
    state: crate::Allocation,
) {
    if len == 0 {
        return;
    }
    if let Some(last) = map.last_mut() {
        if last.state == state && last.offset + last.len == offset {
            last.len += len;
            return;
        }
    }
    map.push(crate::Extent { offset, len, state });
}

#[cfg(test)]
mod block_piece_tests {
    use super::block_pieces;

    #[test]
    fn pieces_never_cross_a_block() {
        let p: Vec<_> = block_pieces(1000, 3000, 1024).collect();
        assert_eq!(
            p,
            vec![
                (1000, 0..24),
                (1024, 24..1048),
                (2048, 1048..2072),
                (3072, 2072..3000)
            ]
        );
        assert_eq!(block_pieces(0, 0, 512).count(), 0);
    }
}
