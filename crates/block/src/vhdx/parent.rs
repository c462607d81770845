//! Parent locators of differencing VHDX images: resolving and opening the parent, and
//! building the locator of a new differencing image.

use std::path::{Path, PathBuf};

use super::headers::{read_current_header, Guid};
use crate::image_file::ImageFile;
use crate::reference::{pick_parent, windows_relative};
use crate::{DiskImage, Format, OpenOptions, Result};

/// `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}` for an on-disk GUID.
pub(crate) fn guid_string(g: &Guid) -> String {
    format!(
        "{{{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}}}",
        g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]
    )
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Find and open the parent named by `locator` (relative path first, then absolute);
/// `allow_external` as in [`OpenOptions::allow_external_backing`].
pub(crate) fn open_parent(
    child: &ImageFile,
    locator: &[(String, String)],
    allow_external: bool,
) -> Result<Box<dyn DiskImage>> {
    let get = |k: &str| {
        locator
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let mut names = Vec::new();
    if let Some(rel) = get("relative_path") {
        names.push(windows_relative(rel));
    }
    for key in ["absolute_win32_path", "volume_path"] {
        if let Some(abs) = get(key) {
            if abs.starts_with('/') {
                names.push(PathBuf::from(abs));
            } else if let Some(name) = abs.rsplit(['\\', '/']).next().filter(|n| !n.is_empty()) {
                // A Windows drive path: the parent may sit next to the child.
                names.push(PathBuf::from(name));
            }
        }
    }
    let path = pick_parent(child.path(), &names, "VHDX", allow_external)?;
    let path = path.as_path();
    if let Some(linkage) = get("parent_linkage") {
        let parent = ImageFile::open(path, true, Format::Vhdx)?;
        let (h, _) = read_current_header(&parent)?;
        if !guid_string(&h.data_write_guid).eq_ignore_ascii_case(linkage) {
            return Err(child.corrupt(format!(
                "parent {} was modified since the child was made (linkage {linkage})",
                path.display()
            )));
        }
    }
    crate::open(
        path,
        &OpenOptions {
            read_only: true,
            format: None,
            allow_external_backing: allow_external,
        },
    )
}

/// Key/value pairs of the locator of a new child of `parent` (at `parent_path`, as given).
pub(crate) fn build_locator(
    child: &Path,
    parent_path: &Path,
    linkage: &Guid,
) -> Vec<(String, String)> {
    let abs = std::fs::canonicalize(parent_path).unwrap_or_else(|_| parent_path.to_path_buf());
    let mut kv = vec![("parent_linkage".to_string(), guid_string(linkage))];
    if let (Ok(child_dir), Some(name)) = (std::fs::canonicalize(dir_of(child)), abs.file_name()) {
        if abs.parent() == Some(child_dir.as_path()) {
            kv.push((
                "relative_path".to_string(),
                format!(".\\{}", name.to_string_lossy()),
            ));
        }
    }
    kv.push((
        "absolute_win32_path".to_string(),
        abs.to_string_lossy().into_owned(),
    ));
    kv
}
