//! Console log files with a size cap: the serial log (`--serial file:PATH`, a background
//! VM's `serial.log`) and the virtio-console log (`--console2 file:PATH`) are written by
//! the guest, which could otherwise fill the host's disk.
//!
//! When a write would take the log past its limit, the log is renamed to `PATH.1`
//! (replacing an older one) and a new, empty `PATH` is started: at most twice the limit
//! is kept on disk, and the newest output is always in `PATH`. Paths that are not regular
//! files (`/dev/null`, a terminal, a FIFO) are written as they are and never renamed.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Size at which a console log is rotated to `PATH.1`.
pub const CONSOLE_LOG_LIMIT: u64 = 16 << 20;

/// An append-only console log rotated at a size limit.
#[derive(Debug)]
pub struct ConsoleLog {
    file: File,
    path: PathBuf,
    /// `None` for files that are never rotated (not regular files).
    limit: Option<u64>,
    size: u64,
    /// Set when a rotation failed: output is dropped from then on (reported once).
    broken: bool,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `PATH.1`, where the previous part of the log goes.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".1");
    PathBuf::from(name)
}

impl ConsoleLog {
    /// Open (or create) the log at `path` for appending, rotated at `limit` bytes.
    pub fn open(path: &Path, limit: u64) -> std::io::Result<Self> {
        let file = open_append(path)?;
        let meta = file.metadata()?;
        Ok(ConsoleLog {
            file,
            path: path.to_path_buf(),
            limit: meta.is_file().then_some(limit.max(1)),
            size: meta.len(),
            broken: false,
        })
    }

    /// Move the full log to `PATH.1` and start an empty one.
    fn rotate(&mut self) -> std::io::Result<()> {
        std::fs::rename(&self.path, rotated_path(&self.path))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Write for ConsoleLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.broken {
            return Ok(buf.len());
        }
        let mut data = buf;
        if let Some(limit) = self.limit {
            if self.size > 0 && self.size + data.len() as u64 > limit {
                if let Err(e) = self.rotate() {
                    self.broken = true;
                    eprintln!(
                        "vessel: console log {} reached {limit} bytes and cannot be rotated \
                         ({e}); further console output is not logged",
                        self.path.display()
                    );
                    return Ok(buf.len());
                }
            }
            // One write larger than the whole limit keeps only its end.
            let keep = data.len().min(usize::try_from(limit).unwrap_or(usize::MAX));
            data = &data[data.len() - keep..];
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_limit_and_keeps_one_old_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut log = ConsoleLog::open(&path, 16).unwrap();
        log.write_all(b"abcdef").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789abcdef");
        log.write_all(b"g").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"g");
        assert_eq!(
            std::fs::read(rotated_path(&path)).unwrap(),
            b"0123456789abcdef"
        );
        for _ in 0..100 {
            log.write_all(b"0123456789").unwrap();
        }
        let cur = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(rotated_path(&path)).unwrap().len();
        assert!(cur <= 16 && old <= 16, "{cur} {old}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // A single write over the limit keeps its last `limit` bytes.
        log.write_all(&[b'x'; 40]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), [b'x'; 16]);
    }

    #[test]
    fn device_files_are_never_renamed() {
        let mut log = ConsoleLog::open(Path::new("/dev/null"), 4).unwrap();
        for _ in 0..10 {
            log.write_all(b"0123456789").unwrap();
        }
        assert!(Path::new("/dev/null").exists());
        assert!(!rotated_path(Path::new("/dev/null")).exists());
    }

    #[test]
    fn a_failed_rotation_drops_output_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = ConsoleLog::open(&path, 8).unwrap();
        log.write_all(b"12345678").unwrap();
        // A directory in the way of the rename.
        std::fs::create_dir(rotated_path(&path)).unwrap();
        std::fs::write(rotated_path(&path).join("f"), b"").unwrap();
        log.write_all(b"9").unwrap();
        log.write_all(b"more").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"12345678");
    }
}
