//! The build's scratch directory: unique per build, removed when the build ends, but never
//! while something is mounted inside it (a failed mmdebstrap could leave /proc or /sys
//! mounted in the tree, and removing through a mount would touch the host).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, Result};

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
    fn mounts_are_found_and_unescaped() {
        assert!(!mounts_under(Path::new("/")).is_empty());
        assert!(mounts_under(Path::new("/nonexistent-vessel-dir")).is_empty());
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain\\"), "/plain\\");
    }
}
