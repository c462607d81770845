//! vhdx images (driver written separately; this placeholder only reports "unsupported").

use std::path::Path;

use crate::{CreateOptions, DiskImage, Error, Format, OpenOptions, Result};

/// Open a vhdx image.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
    let _ = opts;
    Err(Error::Unsupported {
        path: path.to_path_buf(),
        format: Format::Vhdx,
        feature: "the vhdx driver is not built yet".into(),
    })
}

/// Create a vhdx image of `size` bytes.
pub fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<()> {
    let _ = (size, opts);
    Err(Error::Unsupported {
        path: path.to_path_buf(),
        format: Format::Vhdx,
        feature: "the vhdx driver is not built yet".into(),
    })
}
