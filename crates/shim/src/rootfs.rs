//! The container's root on the host: containerd's snapshot mounts (overlay, or a bind
//! mount of the native snapshotter) mounted at the bundle's `rootfs` while the shim copies
//! it into the VM's initramfs, and unmounted again.

use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Errors mounting the snapshot.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("mount the container's {fstype} snapshot at {target}: {source}")]
    Mount {
        fstype: String,
        target: PathBuf,
        source: nix::Error,
    },
    #[error("unmount {0}: {1}")]
    Unmount(PathBuf, nix::Error),
    #[error("the snapshot mount's type is empty")]
    NoType,
}

/// containerd's snapshot mounted at a directory until dropped.
pub struct MountedRoot {
    target: PathBuf,
    mounted: usize,
}

impl MountedRoot {
    /// Mounts `mounts` at `target` in order; with none, `target` is used as it is (the
    /// bundle's rootfs already holds the files).
    pub fn mount(mounts: &[Mount], target: &Path) -> Result<Self, RootfsError> {
        let mut root = MountedRoot {
            target: target.to_path_buf(),
            mounted: 0,
        };
        for m in mounts {
            let (flags, data) = options(&m.options);
            let fstype = if flags.contains(MsFlags::MS_BIND) {
                "none"
            } else {
                m.type_.as_str()
            };
            if fstype.is_empty() {
                return Err(RootfsError::NoType);
            }
            let data = Some(data.as_str()).filter(|d| !d.is_empty());
            mount(Some(m.source.as_str()), target, Some(fstype), flags, data).map_err(
                |source| RootfsError::Mount {
                    fstype: m.type_.clone(),
                    target: target.into(),
                    source,
                },
            )?;
            root.mounted += 1;
        }
        Ok(root)
    }

    /// Unmounts what [`MountedRoot::mount`] mounted.
    pub fn unmount(mut self) -> Result<(), RootfsError> {
        self.unmount_all()
    }

    fn unmount_all(&mut self) -> Result<(), RootfsError> {
        while self.mounted > 0 {
            umount2(&self.target, MntFlags::MNT_DETACH)
                .map_err(|e| RootfsError::Unmount(self.target.clone(), e))?;
            self.mounted -= 1;
        }
        Ok(())
    }
}

impl Drop for MountedRoot {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_all() {
            tracing::warn!("{e}");
        }
    }
}

/// Mount flags and data from containerd's option strings (`bind`/`rbind` included).
fn options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut rest = Vec::new();
    for o in options {
        match o.as_str() {
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            _ => rest.push(o.clone()),
        }
    }
    let (more, data) = agent::mounts::parse_options(&rest);
    (flags | more, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_and_bind_options_split_into_flags_and_data() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (flags, data) = options(&s(&[
            "index=off",
            "workdir=/w",
            "upperdir=/u",
            "lowerdir=/l",
        ]));
        assert_eq!(flags, MsFlags::empty());
        assert_eq!(data, "index=off,workdir=/w,upperdir=/u,lowerdir=/l");
        let (flags, data) = options(&s(&["rbind", "ro"]));
        assert_eq!(
            flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert_eq!(data, "");
    }

    #[test]
    fn no_mounts_leave_the_directory_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let root = MountedRoot::mount(&[], dir.path()).unwrap();
        root.unmount().unwrap();
    }
}
