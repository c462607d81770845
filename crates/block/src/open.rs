//! Opening images: format detection by content and dispatch to the format drivers.

use std::cell::RefCell;
use std::fs::{File, FileType};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{DiskImage, Error, Format, Result};

/// Longest backing chain `open` follows (the top image counts as one).
pub const MAX_CHAIN_DEPTH: usize = 32;

/// How to open an image.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Open without write access; writes fail with [`crate::Error::ReadOnly`].
    pub read_only: bool,
    /// Skip content detection and use this format. When `None` and the content looks raw,
    /// writes that would make the first or last sector look like another format are
    /// refused ([`crate::Error::FormatChange`]): a guest must not be able to turn its disk
    /// into, say, a qcow2 image naming a host file as its backing file.
    pub format: Option<Format>,
    /// Follow names recorded in images (qcow2 backing files, VHD/VHDX parent locators,
    /// VMDK extents and parents) that are absolute or leave the image's directory (`..`).
    /// Off: such names are refused with [`crate::Error::ExternalReference`]; only files in
    /// the image's directory or below it are opened.
    pub allow_external_backing: bool,
}

/// How to create an image.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Backing file (qcow2, VMDK) or parent (VHD differencing, VHDX differencing), and its
    /// format when known (detected otherwise). A relative path is relative to the directory
    /// of the image being created.
    pub backing: Option<(PathBuf, Option<Format>)>,
    /// Allocate all data up front ("fixed" / "preallocated") instead of sparse.
    pub fixed: bool,
    /// Format-specific allocation unit in bytes (qcow2 cluster, VDI/VHD/VHDX block,
    /// VMDK grain); the format's default when `None`.
    pub cluster_size: Option<u64>,
}

/// Result of [`check`]: consistency problems found in one image file.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub format: Option<Format>,
    /// Corruptions (data may be lost or misread). First few messages only.
    pub errors: Vec<String>,
    /// Total number of corruptions, including those not listed in `errors`.
    pub error_count: u64,
    /// Clusters with a refcount but no reference (wasted space, harmless).
    pub leaked_clusters: u64,
    /// Data clusters / blocks allocated in this image.
    pub allocated_clusters: u64,
    /// Clusters / blocks the virtual disk spans.
    pub total_clusters: u64,
    /// Allocation unit of the counts above, in bytes.
    pub cluster_size: u64,
    /// Leaked clusters that were repaired (with `repair`).
    pub repaired_leaks: u64,
}

thread_local! {
    /// Canonical paths of the images being opened on this thread, outermost first: the
    /// backing chain under construction (drivers open their backing files recursively).
    static OPENING: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// Pops this thread's chain entry when an `open` call returns.
struct ChainGuard;

impl Drop for ChainGuard {
    fn drop(&mut self) {
        OPENING.with(|chain| chain.borrow_mut().pop());
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn enter_chain(path: &Path) -> Result<ChainGuard> {
    let canonical = std::fs::canonicalize(path).map_err(|e| io_err(path, e))?;
    OPENING.with(|chain| {
        let mut chain = chain.borrow_mut();
        if chain.contains(&canonical) {
            return Err(Error::InvalidArgument(format!(
                "{}: backing chain loops back to this file",
                path.display()
            )));
        }
        if chain.len() >= MAX_CHAIN_DEPTH {
            return Err(Error::InvalidArgument(format!(
                "{}: backing chain deeper than {MAX_CHAIN_DEPTH} images",
                path.display()
            )));
        }
        chain.push(canonical);
        Ok(ChainGuard)
    })
}

/// What a file of `kind` is, in words, for errors about files of the wrong kind
/// ([`Error::NotAnImage`], and the VMM's kernel and initrd checks).
pub fn file_kind_name(kind: FileType) -> &'static str {
    if kind.is_file() {
        "regular file"
    } else if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Open the existing image file at `path` for reading, and writing unless `read_only`.
/// The open does not block (`O_NONBLOCK`: a FIFO named as an image, by the user or by a
/// downloaded image's backing-file name, would wait forever for a writer) and does not
/// follow a symbolic link in the last component (`O_NOFOLLOW`: a link planted next to an
/// image must not redirect a writable open to another file); anything but a regular file
/// or a block device is refused, then the file is made blocking again.
pub(crate) fn open_image_file(path: &Path, read_only: bool) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                Error::Symlink {
                    path: path.to_path_buf(),
                }
            } else {
                io_err(path, e)
            }
        })?;
    let kind = file.metadata().map_err(|e| io_err(path, e))?.file_type();
    if !(kind.is_file() || kind.is_block_device()) {
        return Err(Error::NotAnImage {
            path: path.to_path_buf(),
            kind: file_kind_name(kind),
        });
    }
    clear_nonblock(&file).map_err(|e| io_err(path, e))?;
    Ok(file)
}

/// Check that `path` names a disk vessel may open: it exists, is not a symbolic link, and
/// is a regular file or a block device (opened read-only, without blocking, to find out).
/// For paths from places that do not open the image themselves, e.g. snapshot state.
pub fn check_disk_path(path: &Path) -> Result<()> {
    open_image_file(path, true).map(drop)
}

fn clear_nonblock(file: &File) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor `file` owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Detect the format of the image at `path` from its content (never from its name).
pub fn detect(path: &Path) -> Result<Format> {
    let mut file = open_image_file(path, true)?;
    let mut head = Vec::with_capacity(512);
    (&mut file)
        .take(512)
        .read_to_end(&mut head)
        .map_err(|e| io_err(path, e))?;
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut tail = [0u8; 512];
    let mut tail_ok = false;
    if len >= 512 {
        file.read_exact_at(&mut tail, len - 512)
            .map_err(|e| io_err(path, e))?;
        tail_ok = true;
    }
    Ok(detect_bytes(&head, tail_ok.then_some(&tail[..])))
}

/// Format of an image whose first (up to) 512 bytes are `head` and last 512 bytes `tail`.
pub(crate) fn detect_bytes(head: &[u8], tail: Option<&[u8]>) -> Format {
    let starts = |magic: &[u8]| head.len() >= magic.len() && &head[..magic.len()] == magic;
    if starts(b"QFI\xfb") {
        return Format::Qcow2;
    }
    if starts(b"<<< ")
        && head.len() >= 0x44
        && u32::from_le_bytes([head[0x40], head[0x41], head[0x42], head[0x43]]) == 0xbeda_107f
    {
        return Format::Vdi;
    }
    if starts(b"vhdxfile") {
        return Format::Vhdx;
    }
    if starts(b"KDMV") || starts(b"# Disk DescriptorFile") {
        return Format::Vmdk;
    }
    if starts(b"conectix") {
        return Format::Vhd;
    }
    if let Some(tail) = tail {
        // Fixed VHDs carry only the footer: 512 bytes at the end (511 in old images).
        if tail.starts_with(b"conectix") || tail.get(1..9) == Some(&b"conectix"[..]) {
            return Format::Vhd;
        }
    }
    Format::Raw
}

/// Open the image at `path`, with its backing chain.
///
/// Backing files are opened read-only; chains deeper than [`MAX_CHAIN_DEPTH`] and chains
/// that reach the same file twice are refused.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
    let _guard = enter_chain(path)?;
    let _budget = crate::budget::enter();
    let (format, probed) = match opts.format {
        Some(format) => (format, false),
        None => (detect(path)?, true),
    };
    match format {
        Format::Raw => crate::raw::open(path, opts, probed),
        Format::Qcow2 => crate::qcow2::open(path, opts),
        Format::Vdi => crate::vdi::open(path, opts),
        Format::Vhd => crate::vhd::open(path, opts),
        Format::Vmdk => crate::vmdk::open(path, opts),
        Format::Vhdx => crate::vhdx::open(path, opts),
    }
}

/// Open the backing file `name` recorded in the image at `image` (read-only), for drivers;
/// `allow_external` as in [`OpenOptions::allow_external_backing`].
pub fn open_backing(
    image: &Path,
    name: &Path,
    format: Option<Format>,
    allow_external: bool,
) -> Result<Box<dyn DiskImage>> {
    let path = crate::resolve_reference(image, name, "backing file", allow_external)?;
    open(
        &path,
        &OpenOptions {
            read_only: true,
            format,
            allow_external_backing: allow_external,
        },
    )
}

/// Create a new image of `format` with virtual size `size` bytes. Fails if `path` exists.
pub fn create(path: &Path, format: Format, size: u64, opts: &CreateOptions) -> Result<()> {
    match format {
        Format::Raw => crate::raw::create(path, size, opts),
        Format::Qcow2 => crate::qcow2::create(path, size, opts),
        Format::Vdi => crate::vdi::create(path, size, opts),
        Format::Vhd => crate::vhd::create(path, size, opts),
        Format::Vmdk => crate::vmdk::create(path, size, opts),
        Format::Vhdx => crate::vhdx::create(path, size, opts),
    }
}

/// Check the consistency of the image at `path`. qcow2 images get a full refcount check
/// (`repair` fixes leaked clusters); other formats are validated by opening them and
/// walking their whole allocation map (with their chains; `allow_external` as in
/// [`OpenOptions::allow_external_backing`]).
pub fn check(
    path: &Path,
    format: Option<Format>,
    repair: bool,
    allow_external: bool,
) -> Result<CheckReport> {
    let format = match format {
        Some(format) => format,
        None => detect(path)?,
    };
    if format == Format::Qcow2 {
        return crate::qcow2::check(path, repair);
    }
    let mut image = open(
        path,
        &OpenOptions {
            read_only: true,
            format: Some(format),
            allow_external_backing: allow_external,
        },
    )?;
    let size = image.size();
    let mut report = CheckReport {
        format: Some(format),
        cluster_size: 65536,
        total_clusters: size.div_ceil(65536),
        ..CheckReport::default()
    };
    let mut offset = 0;
    let mut probe = vec![0u8; 512];
    while offset < size {
        let len = (size - offset).min(1 << 30);
        for extent in image.allocation(offset, len)? {
            if extent.state == crate::Allocation::Data {
                report.allocated_clusters += extent.len.div_ceil(65536);
                // Read the first sector of each data extent: catches block maps that point
                // outside the file.
                let n = extent.len.min(512) as usize;
                image.read_at(&mut probe[..n], extent.offset)?;
            }
        }
        offset += len;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_magic() {
        assert_eq!(detect_bytes(b"QFI\xfb\0\0\0\x03", None), Format::Qcow2);
        let mut vdi = vec![0u8; 0x50];
        vdi[..4].copy_from_slice(b"<<< ");
        vdi[0x40..0x44].copy_from_slice(&0xbeda_107fu32.to_le_bytes());
        assert_eq!(detect_bytes(&vdi, None), Format::Vdi);
        vdi[0x40] = 0;
        assert_eq!(detect_bytes(&vdi, None), Format::Raw);
        assert_eq!(detect_bytes(b"vhdxfile....", None), Format::Vhdx);
        assert_eq!(detect_bytes(b"KDMV\x01\0\0\0", None), Format::Vmdk);
        assert_eq!(
            detect_bytes(b"# Disk DescriptorFile\nversion=1\n", None),
            Format::Vmdk
        );
        assert_eq!(detect_bytes(b"conectix", None), Format::Vhd);
        let mut tail = vec![0u8; 512];
        tail[..8].copy_from_slice(b"conectix");
        assert_eq!(detect_bytes(&[0u8; 512], Some(&tail)), Format::Vhd);
        assert_eq!(detect_bytes(&[0u8; 512], Some(&[0u8; 512])), Format::Raw);
        assert_eq!(detect_bytes(b"", None), Format::Raw);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let ro = open(&path, &OpenOptions::default()).err();
            let rw = open(
                &path,
                &OpenOptions {
                    read_only: false,
                    format: Some(Format::Raw),
                    ..OpenOptions::default()
                },
            )
            .err();
            let _ = tx.send((ro, rw));
        });
        let (ro, rw) = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("opening a FIFO as an image blocked");
        for err in [ro, rw] {
            let err = err.expect("a FIFO was opened as an image");
            assert!(
                matches!(err, Error::NotAnImage { kind: "FIFO", .. }),
                "{err}"
            );
            assert!(err.to_string().contains("is a FIFO, not an image"), "{err}");
        }
        let err = open(dir.path(), &OpenOptions::default()).err().unwrap();
        assert!(
            matches!(
                err,
                Error::NotAnImage {
                    kind: "directory",
                    ..
                }
            ),
            "{err}"
        );
        let err = open(Path::new("/dev/zero"), &OpenOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, Error::NotAnImage { .. }), "{err}");
    }
}
