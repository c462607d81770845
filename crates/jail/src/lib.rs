//! A jailer-style launch for a VMM, in the manner of Firecracker's jailer: the VMM runs as
//! PID 1 of a new PID namespace, in a private mount namespace whose `/` is `DIR/root`
//! holding only the VM's files (bind-mounted at their own paths, read-only unless the VM
//! writes them) and a `/dev` with `kvm` (and `net/tun`), optionally in a new network
//! namespace, a cgroup v2 with CPU/memory/IO limits, and as an unprivileged user.
//!
//! [`run`] does it all: claim DIR ([`dir`]), create the cgroup ([`cgroup`]), fork into the
//! namespaces ([`launch`]), build the jail ([`mounts`]) and run the VMM closure there.
//! docs/jail.md describes the layout and how it maps to Firecracker's jailer.

pub mod cgroup;
pub mod dir;
pub mod files;
pub mod launch;
pub mod mounts;

use std::path::{Path, PathBuf};

pub use cgroup::{parse_setting, CgroupError, Setting};
pub use dir::DirError;
pub use files::{absolute, disk_files, merge, Device, FilesError, JailFile};
pub use launch::{Ended, LaunchError};
pub use mounts::MountError;

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error("cannot build the jail: {0}")]
    Mount(#[from] MountError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("cannot give the jail root {path} to uid {uid}, gid {gid}: {source}")]
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
        source: std::io::Error,
    },
}

impl JailError {
    /// Whether the user's input is at fault (a bad directory, file or cgroup setting)
    /// rather than the host.
    pub fn is_input(&self) -> bool {
        match self {
            JailError::Dir(e) | JailError::Mount(MountError::Dir(e)) => {
                !matches!(e, DirError::Io { .. })
            }
            JailError::Cgroup(e) => !matches!(e, CgroupError::Io { .. }),
            JailError::Files(_) | JailError::Mount(MountError::NotAFile { .. }) => true,
            _ => false,
        }
    }
}

/// What to jail a VMM with.
#[derive(Debug, Clone, Default)]
pub struct Jail {
    /// The jail directory: absolute, existing, empty or vessel's from an earlier run.
    pub dir: PathBuf,
    /// Host files the VMM opens, by absolute path; the same paths inside the jail.
    pub files: Vec<JailFile>,
    /// Device nodes made in the jail's `/dev`.
    pub devices: Vec<Device>,
    /// Give the VMM a network namespace of its own (no NIC uses the host's network).
    pub new_net: bool,
    /// Switch to this uid and gid once the jail is built.
    pub ids: Option<(u32, u32)>,
    /// cgroup v2 limits; none: no cgroup is made.
    pub cgroup: Vec<Setting>,
}

/// Build the jail and run `vmm` inside it; returns once the VMM has exited. `jail_failed`
/// runs in the child instead of `vmm` when the jail cannot be built there (report the
/// error, return an exit status).
pub fn run(
    jail: &Jail,
    vmm: impl FnOnce() -> i32,
    jail_failed: impl FnOnce(&JailError) -> i32,
) -> Result<Ended, JailError> {
    let dir = dir::JailDir::claim(&jail.dir)?;
    if let Some((uid, gid)) = jail.ids {
        std::os::unix::fs::chown(dir.root(), Some(uid), Some(gid)).map_err(|source| {
            JailError::Chown {
                path: dir.root().into(),
                uid,
                gid,
                source,
            }
        })?;
    }
    let cgroup = if jail.cgroup.is_empty() {
        None
    } else {
        Some(make_cgroup(&jail.dir, &jail.cgroup)?)
    };
    let ended = launch::run(jail, &dir, cgroup.as_ref(), vmm, jail_failed);
    if ended.is_err() {
        if let Some(c) = &cgroup {
            let _ = c.remove();
        }
    }
    ended
}

/// The jail's cgroup: `<cgroup2 mount>/vessel/<name of DIR>`.
fn make_cgroup(dir: &Path, settings: &[Setting]) -> Result<cgroup::Cgroup, CgroupError> {
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    cgroup::check_id(&id)?;
    cgroup::check_unique(settings)?;
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| CgroupError::Io {
            what: "cannot read",
            path: "/proc/self/mountinfo".into(),
            source,
        })?;
    let mount = cgroup::find_mount(&mountinfo)?;
    cgroup::Cgroup::create(&mount, &id, settings)
}
