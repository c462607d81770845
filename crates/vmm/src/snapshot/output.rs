//! Creating snapshot output files. The paths come from the API client, but a directory
//! they point into may be shared with others (or hold a downloaded image's symlinks):
//! outputs are created new (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600), never through a
//! symlink and never over an existing file.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::SnapshotError;

/// The error for `path` from a failed create or link: an existing file (or symlink) is
/// [`SnapshotError::OutputExists`].
fn output_error(path: &Path, source: std::io::Error) -> SnapshotError {
    if source.kind() == ErrorKind::AlreadyExists || source.raw_os_error() == Some(libc::ELOOP) {
        SnapshotError::OutputExists(path.to_path_buf())
    } else {
        SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Creates `path` for writing; refuses anything already there, a symlink included.
pub(crate) fn create_new(path: &Path) -> Result<File, SnapshotError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| output_error(path, e))
}

/// Refuses `path` if anything (a dangling symlink too) is there.
pub(crate) fn ensure_absent(path: &Path) -> Result<(), SnapshotError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Err(SnapshotError::OutputExists(path.to_path_buf())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Gives the complete file `partial` its name `path`, which must still be free: a hard
/// link (which, unlike rename, never replaces what appeared at `path` meanwhile), then
/// the partial name is removed.
pub(crate) fn publish(partial: &Path, path: &Path) -> Result<(), SnapshotError> {
    std::fs::hard_link(partial, path).map_err(|e| output_error(path, e))?;
    std::fs::remove_file(partial).map_err(|source| SnapshotError::Io {
        path: partial.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn new_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        create_new(&path).unwrap().write_all(b"x").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn symlinks_and_existing_files_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        for path in [&victim, &link, &dangling] {
            let err = create_new(path).unwrap_err();
            assert!(matches!(err, SnapshotError::OutputExists(_)), "{err}");
            assert!(err.to_string().contains("already exists"), "{err}");
            assert!(matches!(
                ensure_absent(path),
                Err(SnapshotError::OutputExists(_))
            ));
        }
        assert!(!dir.path().join("nothing").exists());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn publish_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("a.partial");
        let target = dir.path().join("a");
        std::fs::write(&partial, b"new").unwrap();
        std::fs::write(&target, b"old").unwrap();
        assert!(matches!(
            publish(&partial, &target),
            Err(SnapshotError::OutputExists(_))
        ));
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        std::fs::remove_file(&target).unwrap();
        publish(&partial, &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert!(!partial.exists());
    }
}
