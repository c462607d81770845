//! Opening images: format detection by content and dispatch to the format drivers.

use std::path::{Path, PathBuf};

use crate::{DiskImage, Format, Result};

/// How to open an image.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Open without write access; writes fail with [`crate::Error::ReadOnly`].
    pub read_only: bool,
    /// Skip content detection and use this format.
    pub format: Option<Format>,
}

/// How to create an image.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Backing file (qcow2, VMDK) or parent (VHD differencing, VHDX differencing), and its
    /// format when known (detected otherwise).
    pub backing: Option<(PathBuf, Option<Format>)>,
    /// Allocate all data up front ("fixed" / "preallocated") instead of sparse.
    pub fixed: bool,
    /// Format-specific allocation unit in bytes (qcow2 cluster, VDI/VHD/VHDX block,
    /// VMDK grain); the format's default when `None`.
    pub cluster_size: Option<u64>,
}

/// Detect the format of the image at `path` from its content.
pub fn detect(path: &Path) -> Result<Format> {
    let _ = path;
    todo!("format detection")
}

/// Open the image at `path`, with its backing chain.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
    let _ = (path, opts);
    todo!("open")
}

/// Create a new image of `format` with virtual size `size` bytes.
pub fn create(path: &Path, format: Format, size: u64, opts: &CreateOptions) -> Result<()> {
    let _ = (path, format, size, opts);
    todo!("create")
}
