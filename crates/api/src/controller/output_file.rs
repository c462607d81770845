//! The files `PUT /logger` and `PUT /metrics` write to, opened as Firecracker opens them:
//! the path must name an existing regular file or FIFO, which is opened for appending
//! without blocking (a FIFO nobody reads must not stall the VMM).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

/// Why an output file was not opened; each API call words it in Firecracker's text.
#[derive(Debug)]
pub enum OutputFileError {
    /// Empty, or with a NUL byte.
    BadPath,
    Open {
        path: String,
        reason: String,
    },
}

/// Opens `path` for appending, non-blocking; it must be a regular file or a FIFO.
pub fn open_output_file(path: &str) -> Result<File, OutputFileError> {
    if path.is_empty() || path.contains('\0') {
        return Err(OutputFileError::BadPath);
    }
    let open_error = |reason: String| OutputFileError::Open {
        path: path.to_string(),
        reason,
    };
    let file = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| open_error(e.to_string()))?;
    let kind = file
        .metadata()
        .map_err(|e| open_error(e.to_string()))?
        .file_type();
    if !(kind.is_file() || kind.is_fifo()) {
        return Err(open_error("not a regular file or a FIFO".into()));
    }
    Ok(file)
}
