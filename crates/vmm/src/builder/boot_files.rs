//! Reading the kernel and initrd. Their paths come from the command line, a VM definition
//! or the API, and a path may name anything: `/dev/zero` would be read until memory runs
//! out, a FIFO would block the VMM. Only regular files are read, with a size cap.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::VmError;

/// Largest kernel image vessel loads.
pub const MAX_KERNEL_BYTES: u64 = 512 << 20;
/// Largest initrd vessel loads (it also has to fit in guest memory).
pub const MAX_INITRD_BYTES: u64 = 2 << 30;

fn read_error(path: &Path, source: std::io::Error) -> VmError {
    VmError::ReadFile {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the `what` ("kernel", "initrd") at `path`: a regular file of at most `limit`
/// bytes. The open never blocks (`O_NONBLOCK`, harmless for a regular file).
pub(crate) fn read_boot_file(
    path: &Path,
    what: &'static str,
    limit: u64,
) -> Result<Vec<u8>, VmError> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| read_error(path, e))?;
    let meta = file.metadata().map_err(|e| read_error(path, e))?;
    if !meta.file_type().is_file() {
        return Err(VmError::NotRegularFile {
            what,
            path: path.to_path_buf(),
            kind: block::file_kind_name(meta.file_type()),
        });
    }
    let too_large = |size| VmError::BootFileTooLarge {
        what,
        path: path.to_path_buf(),
        size,
        limit,
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte past the limit tells a file that grew meanwhile.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_error(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let err = read_boot_file(Path::new("/dev/zero"), "kernel", MAX_KERNEL_BYTES).unwrap_err();
        assert!(
            err.to_string()
                .contains("kernel /dev/zero is a character device, not a regular file"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_boot_file(&fifo, "initrd", 1 << 20).unwrap_err();
        assert!(
            matches!(err, VmError::NotRegularFile { kind: "FIFO", .. }),
            "{err}"
        );
        let file = dir.path().join("k");
        std::fs::write(&file, [7u8; 100]).unwrap();
        assert_eq!(read_boot_file(&file, "kernel", 100).unwrap().len(), 100);
        let err = read_boot_file(&file, "kernel", 99).unwrap_err();
        assert!(
            err.to_string().contains("100 bytes, more than the 99"),
            "{err}"
        );
    }
}
