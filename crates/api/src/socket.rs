//! The API's unix socket file: bound fresh, a stale one (nobody listening) replaced, a live one
//! or a non-socket file left alone, and removed at shutdown only if it is still ours.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SocketError {
    #[error("another process is already serving the API on {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a unix socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("cannot inspect the API socket path {path}: {source}")]
    Inspect { path: PathBuf, source: io::Error },
    #[error("cannot remove the stale API socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot bind the API socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot restrict the API socket {path} to its owner: {source}")]
    Permissions { path: PathBuf, source: io::Error },
}

/// Identifies the socket file we created, so shutdown removes only that file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketIdentity {
    dev: u64,
    ino: u64,
    /// Inode numbers are reused once freed; the change time tells a newer file apart.
    ctime: (i64, i64),
}

impl SocketIdentity {
    fn of(metadata: &fs::Metadata) -> Self {
        SocketIdentity {
            dev: metadata.dev(),
            ino: metadata.ino(),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// Binds `path`, first removing a socket file nobody listens on. The socket is made
/// owner-only (0600): whoever can connect controls the VM.
pub fn bind_api_socket(path: &Path) -> Result<(UnixListener, SocketIdentity), SocketError> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => remove_if_stale(path)?,
        Ok(_) => return Err(SocketError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SocketError::Inspect {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let listener = UnixListener::bind(path).map_err(|source| SocketError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| {
        SocketError::Permissions {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let metadata = fs::symlink_metadata(path).map_err(|source| SocketError::Inspect {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((listener, SocketIdentity::of(&metadata)))
}

fn remove_if_stale(path: &Path) -> Result<(), SocketError> {
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(path).map_err(|source| SocketError::RemoveStale {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(SocketError::Inspect {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Removes the socket file if it is still the one we bound (not a later server's).
pub fn remove_api_socket(path: &Path, identity: SocketIdentity) {
    let ours = fs::symlink_metadata(path)
        .map(|m| SocketIdentity::of(&m) == identity)
        .unwrap_or(false);
    if ours {
        // Nothing useful can be done if this fails: the next server treats it as stale.
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_socket_is_replaced_and_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let (first, identity) = bind_api_socket(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(bind_api_socket(&path), Err(SocketError::InUse(_))));
        drop(first);
        // The file is left behind by the dropped listener: stale now.
        assert!(path.exists());
        let (_second, second_identity) = bind_api_socket(&path).unwrap();
        // The first server's cleanup must not remove the second server's socket.
        remove_api_socket(&path, identity);
        assert!(path.exists());
        remove_api_socket(&path, second_identity);
        assert!(!path.exists());
    }

    #[test]
    fn regular_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        fs::write(&path, b"precious").unwrap();
        assert!(matches!(
            bind_api_socket(&path),
            Err(SocketError::NotASocket(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), b"precious");
    }
}
