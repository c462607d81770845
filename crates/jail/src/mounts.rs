//! Building the jail inside the VMM's process: a private mount namespace (and network
//! namespace when no NIC needs the host's), the VM's files bind-mounted at their own paths
//! under `DIR/root`, a small `/dev`, then `pivot_root` so `DIR/root` is all it can see.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::dir::{place, DirError, Kind};
use crate::files::{Device, JailFile};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error("{path} cannot go into the jail: it is {kind}, not a regular file or block device")]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{what} {path}: {source}")]
    Sys {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn sys(what: &'static str, path: &Path) -> MountError {
    MountError::Sys {
        what,
        path: path.into(),
        source: std::io::Error::last_os_error(),
    }
}

fn cstr(path: &Path) -> Result<CString, MountError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| MountError::Sys {
        what: "path with a NUL byte",
        path: path.into(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })
}

/// Flags every bind mount in the jail gets: nothing set-uid, no devices, nothing executed.
const HARDEN: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

fn mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), MountError> {
    let src_c = src.map(cstr).transpose()?;
    let target_c = cstr(target)?;
    let fstype_c = fstype.map(|s| CString::new(s).unwrap_or_default());
    let data_c = data.map(|s| CString::new(s).unwrap_or_default());
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string alive for the call.
    let r = unsafe {
        libc::mount(
            ptr(&src_c),
            target_c.as_ptr(),
            ptr(&fstype_c),
            flags,
            ptr(&data_c).cast(),
        )
    };
    if r != 0 {
        return Err(sys("cannot mount on", target));
    }
    Ok(())
}

/// Enter new namespaces and make `root` the process's `/`, holding only `files` and
/// `devices` (owned by `owner` when given). The process must be single-threaded.
pub fn enter(
    root: &Path,
    files: &[JailFile],
    devices: &[Device],
    new_net: bool,
    owner: Option<(u32, u32)>,
) -> Result<(), MountError> {
    let mut flags = libc::CLONE_NEWNS;
    if new_net {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: unshare affects only this (single-threaded) process.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(sys("cannot unshare namespaces for", root));
    }
    // Nothing done from here on may propagate back to the host's mounts.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    mount(Some(root), root, None, libc::MS_BIND, None)?;
    mount(
        None,
        root,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | HARDEN,
        None,
    )?;
    bind_files(root, files)?;
    make_dev(root, devices, owner)?;
    pivot(root)
}

fn bind_files(root: &Path, files: &[JailFile]) -> Result<(), MountError> {
    let mut placed: HashMap<PathBuf, (u64, u64)> = HashMap::new();
    for f in files {
        let meta = std::fs::metadata(&f.path).map_err(|source| MountError::Sys {
            what: "cannot open",
            path: f.path.clone(),
            source,
        })?;
        let ft = meta.file_type();
        if !(ft.is_file() || std::os::unix::fs::FileTypeExt::is_block_device(&ft)) {
            return Err(MountError::NotAFile {
                path: f.path.clone(),
                kind: block::file_kind_name(ft),
            });
        }
        let target = place(root, &f.path, Kind::File)?;
        let id = (meta.dev(), meta.ino());
        match placed.get(&target) {
            Some(seen) if *seen == id => continue,
            Some(_) => {
                return Err(DirError::Taken {
                    what: f.path.display().to_string(),
                    path: target,
                }
                .into())
            }
            None => {}
        }
        mount(Some(&f.path), &target, None, libc::MS_BIND, None)?;
        let ro = if f.writable { 0 } else { libc::MS_RDONLY };
        mount(
            None,
            &target,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | HARDEN | ro,
            None,
        )?;
        placed.insert(target, id);
    }
    Ok(())
}

/// The jail's `/dev`: a tmpfs of its own (nothing written to the host's disk) with a node
/// per device, mode 0600, owned by the user the VMM will run as.
fn make_dev(root: &Path, devices: &[Device], owner: Option<(u32, u32)>) -> Result<(), MountError> {
    let dev = place(root, Path::new("/dev"), Kind::Dir)?;
    mount(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=755,size=64k"),
    )?;
    for d in devices {
        let host = d.path();
        let meta = std::fs::metadata(host).map_err(|source| MountError::Sys {
            what: "cannot find",
            path: host.into(),
            source,
        })?;
        let (Some(parent), Some(name)) = (host.parent(), host.file_name()) else {
            continue;
        };
        let node = place(root, parent, Kind::Dir)?.join(name);
        let c = cstr(&node)?;
        // SAFETY: mknod with a valid path, inside the jail's own tmpfs.
        if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, meta.rdev()) } != 0 {
            return Err(sys("cannot create device node", &node));
        }
        if let Some((uid, gid)) = owner {
            // SAFETY: chown with a valid path.
            if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
                return Err(sys("cannot chown", &node));
            }
        }
    }
    Ok(())
}

/// Swap `/` for `root` and detach the old root entirely.
fn pivot(root: &Path) -> Result<(), MountError> {
    let root_c = cstr(root)?;
    let dot = c".";
    // SAFETY: chdir, pivot_root and umount2 with valid NUL-terminated paths.
    unsafe {
        if libc::chdir(root_c.as_ptr()) != 0 {
            return Err(sys("cannot enter", root));
        }
        // pivot_root(".", "."): the old root ends up mounted on top of the new one.
        if libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) != 0 {
            return Err(sys("cannot pivot_root into", root));
        }
        if libc::umount2(dot.as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(sys("cannot detach the old root from", root));
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(sys("cannot enter", Path::new("/")));
        }
    }
    Ok(())
}
