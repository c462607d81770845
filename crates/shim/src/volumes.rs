//! Host directories bound into containers (OCI binds of directories: Kubernetes volumes,
//! `ctr run --mount type=bind`) reach the VM through one virtio-fs share per VM, as Kata
//! Containers shares them.
//!
//! The share ([`crate::vm::VmFiles::volumes`]) is a read-only bind of a working directory
//! beside it (`….d`), which is bound over itself and made a shared mount before the VM
//! starts: the guest cannot create anything in the share's root. Each container's
//! directories are bound in the working directory as `<container>/<n>`, which propagates
//! them into the share (its peer) and into virtiofsd's mount namespace (a slave of it), so
//! binds made while the VM runs (a pod's later containers) reach the guest too. A
//! read-only bind is made read-only in a staging place first and bound from there: a bind
//! copies the read-only flag, and so does its propagation into virtiofsd's namespace,
//! where a remount after the fact would not reach. The guest's agent binds
//! `/run/vessel-volumes/<container>/<n>` into the container. A pod's further container's
//! root (containerd's snapshot) goes into the share the same way, as `<container>/root`.
//!
//! Removal unmounts (lazily) and then removes empty directories only: a bind that did not
//! go away leaves its directory in place rather than anything under it being deleted.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use agent::teardown::{mount_points, unmount_under};
use nix::mount::{mount, MsFlags};

/// Errors sharing host directories with the VM.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("create {0}: {1}")]
    Mkdir(PathBuf, std::io::Error),
    #[error("bind {from} at {to}: {source}")]
    Bind {
        from: PathBuf,
        to: PathBuf,
        source: nix::Error,
    },
    #[error("bind of {0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} is not mounted: the VM has no share of host directories")]
    NoShare(PathBuf),
}

/// A host directory a container binds: where it is on the host, whether read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host: PathBuf,
    pub readonly: bool,
}

/// The name of a container's `n`th volume in the share (what the agent is sent).
pub fn source_name(container: &str, n: usize) -> String {
    format!("{container}/{n}")
}

fn mkdir(path: &Path) -> Result<(), VolumeError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(path)
        .map_err(|e| VolumeError::Mkdir(path.to_path_buf(), e))
}

fn bind_error(from: &Path, to: &Path) -> impl FnOnce(nix::Error) -> VolumeError {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    move |source| VolumeError::Bind { from, to, source }
}

fn bind(from: &Path, to: &Path) -> Result<(), VolumeError> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(from), to, None::<&str>, flags, None::<&str>).map_err(bind_error(from, to))
}

fn remount_read_only(at: &Path) -> Result<(), VolumeError> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(None::<&str>, at, None::<&str>, flags, None::<&str>).map_err(bind_error(at, at))
}

/// Prepares `share` for the VM's virtiofsd: a read-only view of a working directory beside
/// it (a shared mount of its own, where the shim binds volumes), so that binds made there
/// later reach virtiofsd's namespace while the guest can create nothing in the share's
/// root (on the host's /run).
pub fn prepare(share: &Path) -> Result<(), VolumeError> {
    let work = work_dir(share);
    mkdir(&work)?;
    mkdir(share)?;
    let shared = MsFlags::MS_SHARED;
    let made = bind(&work, &work)
        .and_then(|()| {
            mount(None::<&str>, &work, None::<&str>, shared, None::<&str>)
                .map_err(bind_error(&work, &work))
        })
        .and_then(|()| bind(&work, share))
        .and_then(|()| remount_read_only(share));
    if made.is_err() {
        remove(share);
    }
    made
}

/// Where the shim makes its binds: beside the share, which is a read-only view of it.
fn work_dir(share: &Path) -> PathBuf {
    beside(share, ".d")
}

/// Where read-only binds are made before they go into the share: beside it, not in it.
fn staging_dir(share: &Path) -> PathBuf {
    beside(share, ".staging")
}

fn beside(share: &Path, suffix: &str) -> PathBuf {
    let mut name = share.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Binds `container`'s `volumes` into `share` as `<container>/<n>`; on an error the binds
/// made so far are undone.
pub fn bind_all(share: &Path, container: &str, volumes: &[Volume]) -> Result<(), VolumeError> {
    if !volumes.is_empty() {
        check_prepared(share)?;
    }
    for (n, volume) in volumes.iter().enumerate() {
        if let Err(e) = bind_one(share, &source_name(container, n), volume) {
            unbind_all(share, container);
            return Err(e);
        }
    }
    Ok(())
}

/// Binds a pod container's root (containerd's snapshot, mounted at `root`) into `share`
/// as `<container>/root`, where the guest's agent binds it from
/// ([`agent::protocol::pod_root_source`]); read-only if the spec's root is. [`unbind_all`]
/// undoes it.
pub fn bind_root(
    share: &Path,
    container: &str,
    root: &Path,
    readonly: bool,
) -> Result<(), VolumeError> {
    check_prepared(share)?;
    let volume = Volume {
        host: root.to_path_buf(),
        readonly,
    };
    bind_one(share, &agent::protocol::pod_root_source(container), &volume)
        .inspect_err(|_| unbind_all(share, container))
}

/// Whether [`prepare`] made `share` (and its working directory) for a VM.
fn check_prepared(share: &Path) -> Result<(), VolumeError> {
    let mounted = mount_points();
    let prepared = [share.to_path_buf(), work_dir(share)];
    if prepared.iter().all(|p| mounted.contains(p)) {
        Ok(())
    } else {
        Err(VolumeError::NoShare(share.to_path_buf()))
    }
}

/// Binds `volume` into `share` as `name`.
fn bind_one(share: &Path, name: &str, volume: &Volume) -> Result<(), VolumeError> {
    if !volume.host.is_dir() {
        return Err(VolumeError::NotADirectory(volume.host.clone()));
    }
    let to = work_dir(share).join(name);
    mkdir(&to)?;
    if !volume.readonly {
        return bind(&volume.host, &to);
    }
    let staging = staging_dir(share).join(name);
    mkdir(&staging)?;
    let bound = bind(&volume.host, &staging)
        .and_then(|()| remount_read_only(&staging))
        .and_then(|()| bind(&staging, &to));
    unmount_and_prune(&staging_dir(share));
    bound
}

/// Undoes [`bind_all`] for `container` (what is not there is fine).
pub fn unbind_all(share: &Path, container: &str) {
    unmount_and_prune(&work_dir(share).join(container));
}

/// Unmounts the share with everything bound in it and removes its directories.
pub fn remove(share: &Path) {
    unmount_and_prune(share);
    unmount_and_prune(&work_dir(share));
    unmount_and_prune(&staging_dir(share));
}

/// Lazily unmounts every mount at or under `dir` (deepest first), then removes the empty
/// directories there, `dir` too. Never removes a file.
fn unmount_and_prune(dir: &Path) {
    unmount_under(dir);
    let still_mounted: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    prune_empty_dirs(dir, &still_mounted);
}

/// Removes `dir` and the directories under it that are empty once their own empty
/// directories are gone; never enters or removes one of `mounted` (a bind that stayed:
/// what is there is the host's), nor follows a symbolic link.
fn prune_empty_dirs(dir: &Path, mounted: &[PathBuf]) {
    if mounted.iter().any(|m| m == dir) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            prune_empty_dirs(&entry.path(), mounted);
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests;
