//! The jail directory on the host: checked, claimed (marker file, lock), and the place the
//! VM's files appear in (`DIR/root`), built without following symbolic links.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Marks a directory as vessel's jail, and is locked while a VM runs in it.
pub const MARKER: &str = "vessel-jail";
/// The jail's root directory, inside DIR: the VMM's `/`.
pub const ROOT: &str = "root";
/// The VMM's process id (as the host sees it), written while it runs.
pub const PID_FILE: &str = "vmm.pid";

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("jail directory {0} must be an absolute path")]
    Relative(PathBuf),
    #[error("jail directory {0} does not exist (create it first)")]
    Missing(PathBuf),
    #[error("jail directory {0} is not a directory (symbolic links are refused)")]
    NotDirectory(PathBuf),
    #[error(
        "jail directory {dir} is not empty and not vessel's (it holds {entry}); \
         give an empty directory"
    )]
    NotEmpty { dir: PathBuf, entry: String },
    #[error("jail directory {0} is in use by another vessel")]
    Busy(PathBuf),
    #[error("{0} is a symbolic link or not a directory; refusing to build the jail through it")]
    UnsafePath(PathBuf),
    #[error("cannot place {what} at {path} in the jail: it is already taken by another file")]
    Taken { what: String, path: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DirError + 'a {
    move |source| DirError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A claimed jail directory; the lock is held until this is dropped.
#[derive(Debug)]
pub struct JailDir {
    dir: PathBuf,
    root: PathBuf,
    _lock: File,
}

impl JailDir {
    /// Check `dir` (absolute, an existing directory, empty or already vessel's), lock it,
    /// and create `DIR/root`.
    pub fn claim(dir: &Path) -> Result<Self, DirError> {
        if !dir.is_absolute() {
            return Err(DirError::Relative(dir.into()));
        }
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(DirError::NotDirectory(dir.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DirError::Missing(dir.into()))
            }
            Err(e) => return Err(io("cannot inspect", dir)(e)),
        }
        let marker = dir.join(MARKER);
        let owned = std::fs::symlink_metadata(&marker).is_ok_and(|m| m.is_file());
        for entry in std::fs::read_dir(dir).map_err(io("cannot list", dir))? {
            let name = entry.map_err(io("cannot list", dir))?.file_name();
            let known = [MARKER, ROOT, PID_FILE].iter().any(|k| name == *k);
            if !owned || !known {
                return Err(DirError::NotEmpty {
                    dir: dir.into(),
                    entry: name.to_string_lossy().into_owned(),
                });
            }
        }
        let mut lock = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&marker)
            .map_err(io("cannot create", &marker))?;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(DirError::Busy(dir.into()));
        }
        if !owned {
            lock.write_all(b"a vessel jail: see vessel's docs/jail.md\n")
                .map_err(io("cannot write", &marker))?;
        }
        let root = dir.join(ROOT);
        make_dir(&root)?;
        Ok(JailDir {
            dir: dir.into(),
            root,
            _lock: lock,
        })
    }

    /// The jail directory given by the user.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/root`: the VMM's `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Record the VMM's process id in `DIR/vmm.pid`.
    pub fn write_pid(&self, pid: i32) -> Result<(), DirError> {
        let path = self.dir.join(PID_FILE);
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o644)
            .open(&path)
            .map_err(io("cannot create", &path))?;
        writeln!(f, "{pid}").map_err(io("cannot write", &path))
    }

    /// Remove `DIR/vmm.pid` once the VMM has exited.
    pub fn clear_pid(&self) {
        let _ = std::fs::remove_file(self.dir.join(PID_FILE));
    }
}

/// What a place in the jail is: a directory, or a file to bind-mount a file or device on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Create `inner` (an absolute path as the VMM will use it) inside `root`, with its parent
/// directories, never following a symbolic link. `..` goes up one level, never above
/// `root`, exactly as the kernel resolves it inside the jail. Returns the host path.
pub fn place(root: &Path, inner: &Path, kind: Kind) -> Result<PathBuf, DirError> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    let comps: Vec<Component> = inner.components().collect();
    let mut host = root.to_path_buf();
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
            Component::ParentDir => {
                parts.pop();
                host = root.join(parts.iter().collect::<PathBuf>());
                if last && kind == Kind::File {
                    return Err(DirError::UnsafePath(inner.into()));
                }
            }
            Component::Normal(name) => {
                parts.push(name);
                host.push(name);
                if last && kind == Kind::File {
                    make_file(&host)?;
                } else {
                    make_dir(&host)?;
                }
            }
        }
    }
    Ok(host)
}

/// A directory that exists after this, and is no symbolic link.
pub fn make_dir(path: &Path) -> Result<(), DirError> {
    match std::fs::DirBuilder::new().mode(0o755).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => Ok(()),
                _ => Err(DirError::UnsafePath(path.into())),
            }
        }
        Err(e) => Err(io("cannot create", path)(e)),
    }
}

/// An empty regular file to mount on (a stale one from an earlier run is reused).
fn make_file(path: &Path) -> Result<(), DirError> {
    let c =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| DirError::UnsafePath(path.into()))?;
    // SAFETY: open with a valid NUL-terminated path; the fd is closed right after.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
            0o600,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ELOOP | libc::EISDIR | libc::ENXIO) => DirError::UnsafePath(path.into()),
            _ => io("cannot create", path)(e),
        });
    }
    // SAFETY: fd was just opened by this function.
    unsafe { libc::close(fd) };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        _ => Err(DirError::UnsafePath(path.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_checks_the_directory() {
        assert!(matches!(
            JailDir::claim(Path::new("rel/dir")),
            Err(DirError::Relative(_))
        ));
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(
            JailDir::claim(&t.path().join("nope")),
            Err(DirError::Missing(_))
        ));
        std::fs::write(t.path().join("other"), "x").unwrap();
        assert!(matches!(
            JailDir::claim(t.path()),
            Err(DirError::NotEmpty { .. })
        ));
        std::fs::remove_file(t.path().join("other")).unwrap();
        let j = JailDir::claim(t.path()).unwrap();
        assert!(j.root().is_dir());
        assert!(matches!(JailDir::claim(t.path()), Err(DirError::Busy(_))));
        drop(j);
        // Vessel's own directory may be used again once free.
        let j = JailDir::claim(t.path()).unwrap();
        j.write_pid(42).unwrap();
        drop(j);
        std::fs::write(t.path().join("stray"), "x").unwrap();
        assert!(matches!(
            JailDir::claim(t.path()),
            Err(DirError::NotEmpty { .. })
        ));
    }

    #[test]
    fn place_builds_paths_inside_root_without_links() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let p = place(root, Path::new("/a/b/../c/k"), Kind::File).unwrap();
        assert_eq!(p, root.join("a/c/k"));
        assert!(root.join("a/b").is_dir() && p.is_file());
        let up = place(root, Path::new("/../../x"), Kind::File).unwrap();
        assert_eq!(up, root.join("x"));
        std::os::unix::fs::symlink("/etc", root.join("evil")).unwrap();
        assert!(matches!(
            place(root, Path::new("/evil/passwd"), Kind::File),
            Err(DirError::UnsafePath(_))
        ));
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        assert!(matches!(
            place(root, Path::new("/link"), Kind::File),
            Err(DirError::UnsafePath(_))
        ));
    }
}
