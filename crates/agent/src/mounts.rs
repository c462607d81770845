//! The container root's file systems from the OCI spec: kernel file systems at their
//! destinations, the host's files copied in, masked and read-only paths, a read-only root,
//! and the hostname.
//!
//! The VM's devices are the container's: a `tmpfs` at `/dev` becomes the guest's
//! `devtmpfs`, and a v1 `cgroup` mount the guest's `cgroup2` hierarchy. A pod's containers
//! share one tmpfs for `/dev/shm` ([`POD_SHM`]), as they share the sandbox's on a host.
//! A bind of a host directory ([`VOLUME`]) is a bind of its place in the VM's virtio-fs
//! share of them, which the guest's init mounted at [`VOLUMES_DIR`].

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use crate::protocol::{
    valid_volume_source, ContainerSpec, FileSpec, MountSpec, POD_SHM, VOLUME, VOLUMES_DIR,
};

/// Where the pod's shared-memory tmpfs is in the guest.
const POD_SHM_DIR: &str = "/run/vessel-pod-shm";

/// Errors preparing the container's root.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {fstype} at {target}: {source}")]
    Mount {
        fstype: String,
        target: String,
        source: nix::Error,
    },
    #[error("create {0}: {1}")]
    Mkdir(String, std::io::Error),
    #[error("set the hostname: {0}")]
    Hostname(nix::Error),
    #[error("write {0}: {1}")]
    File(String, std::io::Error),
    #[error(
        "the volume {0:?} is not in the VM's share of host directories ({VOLUMES_DIR} holds \
         no such directory: the VM has no virtio-fs share, or the host did not bind it)"
    )]
    NoVolume(String),
}

/// Mount flags by option name; `true` sets the flag, `false` clears it.
const FLAGS: [(&str, MsFlags, bool); 13] = [
    ("ro", MsFlags::MS_RDONLY, true),
    ("rw", MsFlags::MS_RDONLY, false),
    ("nosuid", MsFlags::MS_NOSUID, true),
    ("suid", MsFlags::MS_NOSUID, false),
    ("nodev", MsFlags::MS_NODEV, true),
    ("dev", MsFlags::MS_NODEV, false),
    ("noexec", MsFlags::MS_NOEXEC, true),
    ("exec", MsFlags::MS_NOEXEC, false),
    ("relatime", MsFlags::MS_RELATIME, true),
    ("strictatime", MsFlags::MS_STRICTATIME, true),
    ("noatime", MsFlags::MS_NOATIME, true),
    ("sync", MsFlags::MS_SYNCHRONOUS, true),
    ("dirsync", MsFlags::MS_DIRSYNC, true),
];

/// Splits OCI mount options into flags and the file system's own data (`a=b,c`).
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        match FLAGS.iter().find(|(name, _, _)| name == option) {
            Some((_, flag, true)) => flags |= *flag,
            Some((_, flag, false)) => flags &= !*flag,
            None => data.push(option.as_str()),
        }
    }
    (flags, data.join(","))
}

/// What the guest mounts for `m`: (file system type, data).
fn guest_fstype(m: &MountSpec, data: String) -> (&str, Option<String>) {
    match (m.fstype.as_str(), m.destination.as_str()) {
        ("tmpfs", "/dev") => ("devtmpfs", None),
        ("cgroup", _) | ("cgroup2", _) => ("cgroup2", None),
        (fstype, _) => (fstype, Some(data).filter(|d| !d.is_empty())),
    }
}

fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn mkdir(path: &Path) -> Result<(), MountError> {
    std::fs::create_dir_all(path).map_err(|e| MountError::Mkdir(path.display().to_string(), e))
}

fn mount_at(
    source: Option<&Path>,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    mount(
        source.or(Some(Path::new(fstype))),
        target,
        Some(fstype),
        flags,
        data,
    )
    .map_err(|source| MountError::Mount {
        fstype: fstype.to_string(),
        target: target.display().to_string(),
        source,
    })
}

/// Bind-mounts `target` over itself and makes that read-only.
fn read_only(target: &Path) -> Result<(), MountError> {
    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount_at(Some(target), target, "none", bind, None)?;
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount_at(None, target, "none", ro, None)
}

/// Binds the host directory `source` names in the share at `target`, read-only if asked
/// (the host's mount is read-only then too).
fn mount_volume(source: Option<&str>, target: &Path, flags: MsFlags) -> Result<(), MountError> {
    let name = source.unwrap_or_default();
    let from = Path::new(VOLUMES_DIR).join(name);
    if !valid_volume_source(name) || !from.is_dir() {
        return Err(MountError::NoVolume(name.to_string()));
    }
    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount_at(Some(&from), target, "none", bind, None)?;
    if flags.contains(MsFlags::MS_RDONLY) {
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount_at(None, target, "none", ro, None)?;
    }
    Ok(())
}

/// Mounts one of the spec's file systems at `target`.
fn mount_one(m: &MountSpec, target: &Path) -> Result<(), MountError> {
    let (flags, data) = parse_options(&m.options);
    if m.fstype == VOLUME {
        return mount_volume(m.source.as_deref(), target, flags);
    }
    if m.fstype == POD_SHM {
        let shm = Path::new(POD_SHM_DIR);
        if !shm.exists() {
            mkdir(shm)?;
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount_at(None, shm, "tmpfs", flags, Some("mode=1777"))?;
        }
        mount_at(Some(shm), target, "none", MsFlags::MS_BIND, None)?;
        if flags.contains(MsFlags::MS_RDONLY) {
            let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mount_at(None, target, "none", ro, None)?;
        }
        return Ok(());
    }
    let (fstype, data) = guest_fstype(m, data);
    mount_at(None, target, fstype, flags, data.as_deref())
}

/// Writes a host file's copy into the root, as a mount of its own (as the host's bind
/// is): writable in a read-only root, or read-only if asked.
fn copy_in(root: &Path, file: &FileSpec) -> Result<(), MountError> {
    let target = inside(root, &file.destination);
    if let Some(dir) = target.parent() {
        mkdir(dir)?;
    }
    let name = || target.display().to_string();
    std::fs::write(&target, &file.data).map_err(|e| MountError::File(name(), e))?;
    if file.readonly {
        read_only(&target)
    } else {
        mount_at(Some(&target), &target, "none", MsFlags::MS_BIND, None)
    }
}

/// Mounts the spec's file systems in `root`, copies its files in, masks and
/// write-protects its paths (and the root, if asked), and sets the hostname.
pub fn prepare(root: &Path, spec: &ContainerSpec) -> Result<(), MountError> {
    if spec.readonly_root {
        // A mount of its own, made read-only once everything is in place.
        let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
        mount_at(Some(root), root, "none", bind, None)?;
    }
    for m in &spec.mounts {
        let target = inside(root, &m.destination);
        mkdir(&target)?;
        mount_one(m, &target)?;
    }
    for file in &spec.files {
        copy_in(root, file)?;
    }
    for path in &spec.masked_paths {
        let target = inside(root, path);
        if target.is_dir() {
            mount_at(None, &target, "tmpfs", MsFlags::MS_RDONLY, None)?;
        } else if target.exists() {
            mount_at(
                Some(Path::new("/dev/null")),
                &target,
                "none",
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    for path in &spec.readonly_paths {
        let target = inside(root, path);
        if target.exists() {
            read_only(&target)?;
        }
    }
    if spec.readonly_root {
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount_at(None, root, "none", ro, None)?;
    }
    if let Some(name) = &spec.hostname {
        nix::unistd::sethostname(name).map_err(MountError::Hostname)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data) = parse_options(&strings(&[
            "nosuid",
            "strictatime",
            "mode=755",
            "size=65536k",
        ]));
        assert_eq!(flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(data, "mode=755,size=65536k");
        let (flags, data) = parse_options(&strings(&["ro", "rw", "nodev"]));
        assert_eq!(flags, MsFlags::MS_NODEV);
        assert_eq!(data, "");
    }

    #[test]
    fn dev_and_cgroup_mounts_become_the_guests_own() {
        let m = |fstype: &str, destination: &str| MountSpec {
            destination: destination.into(),
            fstype: fstype.into(),
            options: vec![],
            source: None,
        };
        assert_eq!(
            guest_fstype(&m("tmpfs", "/dev"), "mode=755".into()),
            ("devtmpfs", None)
        );
        assert_eq!(
            guest_fstype(&m("cgroup", "/sys/fs/cgroup"), "x".into()),
            ("cgroup2", None)
        );
        let shm_mount = m("tmpfs", "/dev/shm");
        let shm = guest_fstype(&shm_mount, "size=1k".into());
        assert_eq!(shm, ("tmpfs", Some("size=1k".to_string())));
        assert_eq!(
            guest_fstype(&m("proc", "/proc"), String::new()),
            ("proc", None)
        );
    }

    #[test]
    fn a_volume_missing_from_the_share_is_a_clear_error() {
        let target = tempfile::tempdir().unwrap();
        for source in [None, Some("../0"), Some("no-such-container/0")] {
            let err = mount_volume(source, target.path(), MsFlags::empty()).unwrap_err();
            assert!(matches!(err, MountError::NoVolume(_)), "{err}");
            assert!(err.to_string().contains("virtio-fs"), "{err}");
        }
    }
}
