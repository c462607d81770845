//! Taking a pod container's directory away once it ended, without touching what was
//! mounted into it: its volumes are the host's directories (through virtio-fs), and a
//! removal that followed a bind into one would delete the host's files.
//!
//! First every mount under the directory is detached (deepest first), then the tree is
//! removed without crossing into another file system: whatever is still mounted there
//! (a detach that failed) is left alone, with what is under it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

/// Detaches every mount at or under `dir`, then removes what is left of `dir` on its own
/// file system.
pub fn remove_container_dir(dir: &Path) {
    unmount_under(dir);
    if let Ok(meta) = std::fs::symlink_metadata(dir) {
        remove_on_device(dir, meta.dev());
    }
}

/// The mount points of the calling thread's namespace, from `/proc/thread-self/mountinfo`
/// (its octal escapes undone): `/proc/self` is the main thread's, whose namespace a thread
/// that unshared its own does not share.
pub fn mount_points() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .collect()
}

/// Undoes mountinfo's `\ooo` escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4);
        let octal = digits.filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
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

/// Detaches the mounts at or under `dir`, deepest first (stacked ones all: a self-bind,
/// say).
pub fn unmount_under(dir: &Path) {
    let mut mounted: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    mounted.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &mounted {
        while umount2(m.as_path(), MntFlags::MNT_DETACH).is_ok() {}
    }
}

/// Removes `path` and what is under it that is on device `dev`; never enters a directory
/// of another device (a mount that stayed) nor follows a symbolic link.
fn remove_on_device(path: &Path, dev: u64) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.dev() != dev {
        return;
    }
    if !meta.is_dir() {
        let _ = std::fs::remove_file(path);
        return;
    }
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            remove_on_device(&entry.path(), dev);
        }
    }
    let _ = std::fs::remove_dir(path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::mount::{mount, MsFlags};

    /// A tmpfs at `at` holding `keep`.
    fn other_fs_with_a_file(at: &Path) -> PathBuf {
        std::fs::create_dir_all(at).unwrap();
        let none: Option<&str> = None;
        mount(Some("tmpfs"), at, Some("tmpfs"), MsFlags::empty(), none).unwrap();
        let keep = at.join("keep");
        std::fs::write(&keep, "the host's").unwrap();
        keep
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape(r"/plain"), r"/plain");
        assert_eq!(unescape(r"/short\04"), r"/short\04");
        assert_eq!(unescape(r"/not\9990"), r"/not\9990");
    }

    #[test]
    fn files_behind_a_mount_that_stays_are_never_removed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c1/rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hosts"), "x").unwrap();
        let volume = root.join("data");
        let keep = other_fs_with_a_file(&volume);
        // The mount is not detached: the same-device walk alone must spare it.
        remove_on_device(&dir.path().join("c1"), dir.path().metadata().unwrap().dev());
        assert!(keep.is_file(), "a file behind a mount point was removed");
        assert!(!root.join("etc").exists());
        umount2(volume.as_path(), MntFlags::MNT_DETACH).unwrap();
    }

    #[test]
    fn a_container_dir_goes_and_a_bound_host_directory_keeps_its_files() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir(host.path().join("sub")).unwrap();
        std::fs::write(host.path().join("sub/f"), "the host's").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let container = dir.path().join("c1");
        let data = container.join("rootfs/data");
        std::fs::create_dir_all(&data).unwrap();
        let none: Option<&str> = None;
        let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
        mount(Some(host.path()), &data, none, bind, none).unwrap();
        other_fs_with_a_file(&container.join("rootfs/proc"));
        remove_container_dir(&container);
        assert!(!container.exists());
        assert!(!mount_points().iter().any(|m| m.starts_with(&container)));
        assert!(
            host.path().join("sub/f").is_file(),
            "the host's file was removed"
        );
    }
}
