//! The build's scratch directory: unique per build, removed when the build ends, but never
//! while something is mounted inside it (a failed mmdebstrap could leave /proc or /sys
//! mounted in the tree, and removing through a mount would touch the host).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, Result};

/// Space a build's scratch tree needs, with room to spare (the tree is about 500 MiB).
const SCRATCH_BYTES: u64 = 2 << 30;

/// Where builds work by default: `/dev/shm` when it is a tmpfs with room for the tree (dpkg's
/// many small files and their removal are far faster in memory than on a slow disk), else the
/// temporary directory.
pub fn default_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if is_tmpfs(shm) && available_bytes(shm).is_some_and(|b| b >= SCRATCH_BYTES) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn is_tmpfs(dir: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let fs_type = fields.iter().skip_while(|f| **f != "-").nth(1);
        fields.get(4) == Some(&dir.to_string_lossy().as_ref()) && fs_type == Some(&"tmpfs")
    })
}

/// Bytes an unprivileged user could still write under `dir`.
fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data, for which all-zero bytes are a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a valid, writable statvfs that
    // outlives the call.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// A directory removed with everything in it when dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Create a fresh `vessel-debimage.<pid>.<nanos>` directory under `parent`.
    pub fn create(parent: &Path) -> Result<WorkDir> {
        std::fs::create_dir_all(parent).at(parent)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = parent.join(format!("vessel-debimage.{}.{nanos}", std::process::id()));
        std::fs::create_dir(&path).at(&path)?;
        let path = path.canonicalize().at(&path)?;
        Ok(WorkDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if mounts_under(&self.path).is_empty() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Mount points at or below `dir`, from /proc/self/mountinfo (none if it cannot be read).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape_mount_path(point)))
        .filter(|point| point.starts_with(dir))
        .collect()
}

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], code) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_dir_is_removed_on_drop() {
        let parent = tempfile::tempdir().unwrap();
        let work = WorkDir::create(parent.path()).unwrap();
        let path = work.path().to_path_buf();
        std::fs::create_dir_all(path.join("a/b")).unwrap();
        std::fs::write(path.join("a/b/c"), "x").unwrap();
        drop(work);
        assert!(!path.exists());
    }

    #[test]
    fn default_parent_is_a_directory() {
        assert!(default_parent().is_dir());
        assert!(available_bytes(Path::new("/")).is_some_and(|b| b > 0));
        assert_eq!(available_bytes(Path::new("/nonexistent-vessel-dir")), None);
        assert!(!is_tmpfs(Path::new("/nonexistent-vessel-dir")));
    }

    #[test]
    fn mounts_are_found_and_unescaped() {
        assert!(!mounts_under(Path::new("/")).is_empty());
        assert!(mounts_under(Path::new("/nonexistent-vessel-dir")).is_empty());
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain\\"), "/plain\\");
    }
}
