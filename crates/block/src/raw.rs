//! Raw images: the file is the disk, byte for byte. Holes in the file are unallocated.

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::{Allocation, CreateOptions, DiskImage, Error, Extent, Format, OpenOptions, Result};

/// A raw image file.
pub(crate) struct RawImage {
    file: File,
    path: PathBuf,
    size: u64,
    read_only: bool,
    /// The format was detected, not given: writes must not make the content detect as
    /// another format ([`RawImage::check_format_kept`]).
    probed: bool,
    /// Detection also reads the last sector (regular files; a block device's length reads
    /// as 0 from its metadata).
    probe_tail: bool,
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Open a raw image; `probed` when its format was detected from the content rather than
/// given by the user.
pub(crate) fn open(path: &Path, opts: &OpenOptions, probed: bool) -> Result<Box<dyn DiskImage>> {
    let file = crate::open::open_image_file(path, opts.read_only)?;
    let meta = file.metadata().map_err(|e| io_err(path, e))?;
    let size = file_size(&file).map_err(|e| io_err(path, e))?;
    Ok(Box::new(RawImage {
        file,
        path: path.to_path_buf(),
        size,
        read_only: opts.read_only,
        probed: probed && (meta.is_file() || meta.file_type().is_block_device()),
        probe_tail: meta.is_file(),
    }))
}

/// Size of a regular file or block device.
fn file_size(file: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let meta = file.metadata()?;
    if meta.file_type().is_file() {
        return Ok(meta.len());
    }
    let mut f = file;
    f.seek(SeekFrom::End(0))
}

pub(crate) fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<()> {
    if opts.backing.is_some() {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            format: Format::Raw,
            feature: "backing files".into(),
        });
    }
    let file = FsOpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    file.set_len(size).map_err(|e| io_err(path, e))?;
    if opts.fixed && size > 0 {
        fallocate(&file, 0, 0, size).map_err(|e| io_err(path, e))?;
    }
    file.sync_all().map_err(|e| io_err(path, e))
}

fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: fallocate only reads its integer arguments; the fd is owned by `file`.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset as i64, len as i64) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Deallocate `[offset, offset + len)` of `file` so that it reads as zeroes: punch a hole,
/// else zero the range in place, else write zeroes.
pub(crate) fn zero_file_range(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    if fallocate(file, punch, offset, len).is_ok() {
        return Ok(());
    }
    if fallocate(
        file,
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
    .is_ok()
    {
        return Ok(());
    }
    let zeroes = vec![0u8; len.min(1 << 20) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeroes.len() as u64) as usize;
        file.write_all_at(&zeroes[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// `lseek(fd, offset, whence)`, `None` when there is no such position (ENXIO).
fn seek_data_hole(file: &File, offset: u64, whence: libc::c_int) -> std::io::Result<Option<u64>> {
    // SAFETY: lseek only reads its integer arguments; the fd is owned by `file`.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, whence) };
    if rc >= 0 {
        return Ok(Some(rc as u64));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENXIO) {
        Ok(None)
    } else {
        Err(err)
    }
}

/// Data and hole runs of `[offset, end)` of `file` (whole range as data when the file
/// system cannot tell).
pub(crate) fn file_extents(file: &File, offset: u64, end: u64) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::new();
    let push = |out: &mut Vec<Extent>, start: u64, stop: u64, state: Allocation| {
        if stop <= start {
            return;
        }
        match out.last_mut() {
            Some(last) if last.state == state && last.offset + last.len == start => {
                last.len += stop - start
            }
            _ => out.push(Extent {
                offset: start,
                len: stop - start,
                state,
            }),
        }
    };
    let mut pos = offset;
    while pos < end {
        let data = match seek_data_hole(file, pos, libc::SEEK_DATA) {
            Ok(Some(d)) => d.min(end),
            Ok(None) => end,
            Err(_) => {
                push(&mut out, pos, end, Allocation::Data);
                break;
            }
        };
        push(&mut out, pos, data, Allocation::Zero);
        if data >= end {
            break;
        }
        let hole = match seek_data_hole(file, data, libc::SEEK_HOLE) {
            Ok(Some(h)) => h.min(end),
            _ => end,
        };
        let hole = hole.max(data + 1).min(end);
        push(&mut out, data, hole, Allocation::Data);
        pos = hole;
    }
    out
}

impl RawImage {
    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::OutOfRange {
                offset,
                len,
                size: self.size,
            }),
        }
    }

    /// Refuse a write of `buf` at `offset` after which [`crate::open::detect_bytes`] would
    /// see another format than raw in the first or last sector (the sectors detection
    /// reads). Only for probed disks: a guest must not turn its raw disk into an image
    /// header whose backing file names a host file, to be followed on the next open.
    fn check_format_kept(&self, buf: &[u8], offset: u64) -> Result<()> {
        const SECTOR: u64 = 512;
        let end = offset + buf.len() as u64;
        let tail_start = self.size.checked_sub(SECTOR).filter(|_| self.probe_tail);
        let touches_head = offset < SECTOR;
        let touches_tail = tail_start.is_some_and(|t| end > t);
        if !self.probed || !(touches_head || touches_tail) {
            return Ok(());
        }
        let window = |start: u64, len: u64| -> Result<Vec<u8>> {
            let mut bytes = vec![0u8; len as usize];
            self.file
                .read_exact_at(&mut bytes, start)
                .map_err(|e| io_err(&self.path, e))?;
            // Overlay the part of the write that falls into [start, start + len).
            let lo = offset.max(start);
            let hi = end.min(start + len);
            if lo < hi {
                bytes[(lo - start) as usize..(hi - start) as usize]
                    .copy_from_slice(&buf[(lo - offset) as usize..(hi - offset) as usize]);
            }
            Ok(bytes)
        };
        let head = window(0, self.size.min(SECTOR))?;
        let tail = match tail_start {
            Some(t) => Some(window(t, SECTOR)?),
            None => None,
        };
        match crate::open::detect_bytes(&head, tail.as_deref()) {
            Format::Raw => Ok(()),
            format => Err(Error::FormatChange {
                path: self.path.clone(),
                format,
            }),
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }
}

impl DiskImage for RawImage {
    fn format(&self) -> Format {
        Format::Raw
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    // The file shrank underneath us: the rest reads as zeroes.
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(&self.path, e)),
            }
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, buf.len() as u64)?;
        self.check_format_kept(buf, offset)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| io_err(&self.path, e))
    }

    fn flush(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data().map_err(|e| io_err(&self.path, e))
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        zero_file_range(&self.file, offset, len).map_err(|e| io_err(&self.path, e))
    }

    fn allocation(&mut self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.check_range(offset, len)?;
        Ok(file_extents(&self.file, offset, offset + len))
    }

    fn allocated_bytes(&self) -> Result<u64> {
        let meta = self.file.metadata().map_err(|e| io_err(&self.path, e))?;
        Ok(meta.blocks() * 512)
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn resize(&mut self, new_size: u64) -> Result<()> {
        self.check_writable()?;
        if new_size < self.size {
            let tail = file_extents(&self.file, new_size, self.size);
            if tail.iter().any(|e| e.state == Allocation::Data) {
                return Err(Error::InvalidArgument(format!(
                    "{}: refusing to shrink: data is stored beyond {new_size} bytes",
                    self.path.display()
                )));
            }
        }
        self.file
            .set_len(new_size)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| io_err(&self.path, e))?;
        self.size = new_size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_create_write_read_discard() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.raw");
        create(&path, 8 << 20, &CreateOptions::default()).unwrap();
        let mut img = open(&path, &OpenOptions::default(), false).unwrap();
        assert_eq!(img.size(), 8 << 20);
        assert!(img.allocated_bytes().unwrap() < 64 * 1024);
        img.write_at(&[0xabu8; 8192], 1 << 20).unwrap();
        let mut buf = vec![0u8; 8192];
        img.read_at(&mut buf, 1 << 20).unwrap();
        assert!(buf.iter().all(|&b| b == 0xab));
        let map = img.allocation(0, 8 << 20).unwrap();
        assert!(map
            .iter()
            .any(|e| e.state == Allocation::Data && e.offset <= 1 << 20));
        img.discard(1 << 20, 8192).unwrap();
        img.read_at(&mut buf, 1 << 20).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        assert!(matches!(
            img.read_at(&mut buf, (8 << 20) - 10),
            Err(Error::OutOfRange { .. })
        ));
        img.flush().unwrap();
    }

    #[test]
    fn shrink_refused_over_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.raw");
        create(&path, 4 << 20, &CreateOptions::default()).unwrap();
        let mut img = open(&path, &OpenOptions::default(), false).unwrap();
        img.write_at(&[1u8; 4096], 3 << 20).unwrap();
        assert!(img.resize(2 << 20).is_err());
        img.resize(16 << 20).unwrap();
        assert_eq!(img.size(), 16 << 20);
        img.resize(3 << 20 | 4096).unwrap();
    }

    #[test]
    fn read_only_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.raw");
        create(&path, 1 << 20, &CreateOptions::default()).unwrap();
        let mut img = open(
            &path,
            &OpenOptions {
                read_only: true,
                ..OpenOptions::default()
            },
            false,
        )
        .unwrap();
        assert!(matches!(img.write_at(&[1], 0), Err(Error::ReadOnly)));
    }

    /// A qcow2 header whose backing file is `/etc/shadow`, as a guest would write it.
    fn hostile_qcow2_header() -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[8..16].copy_from_slice(&0x200u64.to_be_bytes());
        h[16..20].copy_from_slice(&11u32.to_be_bytes());
        h[0x200 - 0x100..0x200 - 0x100 + 11].copy_from_slice(b"/etc/shadow");
        h
    }

    #[test]
    fn probed_raw_refuses_writes_that_change_its_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guest.img");
        create(&path, 1 << 20, &CreateOptions::default()).unwrap();
        let mut img = crate::open(&path, &OpenOptions::default()).unwrap();
        let err = img.write_at(&hostile_qcow2_header(), 0).unwrap_err();
        assert!(
            matches!(
                err,
                Error::FormatChange {
                    format: Format::Qcow2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("look like a qcow2 image"), "{err}");
        // The magic alone, written one byte past the start, and a VHD footer at the end.
        assert!(img.write_at(b"FI\xfb", 1).is_ok());
        assert!(matches!(
            img.write_at(b"Q", 0),
            Err(Error::FormatChange { .. })
        ));
        assert!(matches!(
            img.write_at(b"conectix", (1 << 20) - 512),
            Err(Error::FormatChange {
                format: Format::Vhd,
                ..
            })
        ));
        // Ordinary writes to the same sectors (a partition table) still work.
        let mut mbr = vec![0u8; 512];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        img.write_at(&mbr, 0).unwrap();
        img.write_at(&[7u8; 4096], (1 << 20) - 4096).unwrap();
        assert_eq!(crate::detect(&path).unwrap(), Format::Raw);
        // Given explicitly as raw, the disk may hold anything.
        drop(img);
        let mut img = crate::open(
            &path,
            &OpenOptions {
                format: Some(Format::Raw),
                ..OpenOptions::default()
            },
        )
        .unwrap();
        img.write_at(&hostile_qcow2_header(), 0).unwrap();
        assert_eq!(crate::detect(&path).unwrap(), Format::Qcow2);
    }
}
