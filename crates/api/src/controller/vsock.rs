//! `PUT /vsock`, as Firecracker takes it: before the microVM starts only, a CID of at least 3
//! and a Unix socket path the VMM can listen on. A later PUT replaces the device.

use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use thiserror::Error;

use super::{ApiReply, ControlError, VmController};
use crate::model::Vsock;
use crate::validate::validate_id;

/// Least guest CID (0-2 are the hypervisor, loopback and the host).
pub const MIN_GUEST_CID: u32 = 3;
/// Longest `uds_path`: a Unix socket path holds 107 bytes, and guest connections to port P go
/// to `<uds_path>_P`, up to 11 bytes longer.
pub const MAX_UDS_PATH_LEN: usize = 107 - 11;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum VsockRequestError {
    #[error("Invalid vsock guest_cid {0}: it must be between {MIN_GUEST_CID} and 4294967294.")]
    Cid(u32),
    #[error("Invalid vsock uds_path: it cannot be empty or contain a NUL byte.")]
    EmptyPath,
    #[error("Invalid vsock uds_path: at most {MAX_UDS_PATH_LEN} bytes, got {0}.")]
    PathTooLong(usize),
    #[error("Invalid vsock uds_path {0}: the file exists and is not a Unix socket.")]
    NotASocket(String),
    #[error("Invalid vsock uds_path {0}: another process is listening on it.")]
    InUse(String),
}

/// Check a `PUT /vsock` body. A socket file nobody listens on (left by a VMM that died) is
/// accepted: the VMM replaces it when it starts.
pub fn validate_vsock(v: &Vsock) -> Result<(), ControlError> {
    if let Some(id) = &v.vsock_id {
        validate_id(id)?;
    }
    if v.guest_cid < MIN_GUEST_CID || v.guest_cid == u32::MAX {
        return Err(VsockRequestError::Cid(v.guest_cid).into());
    }
    if v.uds_path.is_empty() || v.uds_path.contains('\0') {
        return Err(VsockRequestError::EmptyPath.into());
    }
    if v.uds_path.len() > MAX_UDS_PATH_LEN {
        return Err(VsockRequestError::PathTooLong(v.uds_path.len()).into());
    }
    let path = Path::new(&v.uds_path);
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            Err(VsockRequestError::NotASocket(v.uds_path.clone()).into())
        }
        Ok(_) if std::os::unix::net::UnixStream::connect(path).is_ok() => {
            Err(VsockRequestError::InUse(v.uds_path.clone()).into())
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        // Anything else (a directory on the way that cannot be searched...) shows at start.
        Err(_) => Ok(()),
    }
}

impl VmController {
    pub(super) fn set_vsock(&mut self, vsock: Vsock) -> Result<ApiReply, ControlError> {
        self.require_not_started()?;
        validate_vsock(&vsock)?;
        self.vsock = Some(vsock);
        Ok(ApiReply::NoContent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(cid: u32, path: &str) -> Vsock {
        Vsock {
            vsock_id: None,
            guest_cid: cid,
            uds_path: path.into(),
        }
    }

    fn err(v: &Vsock) -> String {
        validate_vsock(v).unwrap_err().to_string()
    }

    #[test]
    fn cid_and_path_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("v.sock").display().to_string();
        assert!(validate_vsock(&v(3, &ok)).is_ok());
        for cid in [0, 1, 2, u32::MAX] {
            assert!(err(&v(cid, &ok)).contains("guest_cid"), "{cid}");
        }
        assert!(err(&v(3, "")).contains("empty"));
        assert!(err(&v(3, "a\0b")).contains("NUL"));
        assert!(err(&v(3, &"x".repeat(97))).contains("at most 96"));
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(err(&v(3, &file.display().to_string())).contains("not a Unix socket"));
        let live = dir.path().join("live.sock");
        let listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        assert!(err(&v(3, &live.display().to_string())).contains("listening"));
        drop(listener);
        assert!(
            validate_vsock(&v(3, &live.display().to_string())).is_ok(),
            "stale"
        );
        let mut bad_id = v(3, &ok);
        bad_id.vsock_id = Some("a b".into());
        assert!(validate_vsock(&bad_id).is_err());
    }
}
