//! What goes into a jail: the VM's files (absolute paths as the VMM opens them, each
//! read-only or writable) and the device nodes it needs.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot make {path} absolute: {source}")]
    Absolute {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot list the backing chain of disk {path}: {source}")]
    Chain { path: PathBuf, source: block::Error },
}

/// A host file the VMM opens by `path`, bind-mounted at the same path inside the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailFile {
    pub path: PathBuf,
    pub writable: bool,
}

/// A device node the VMM needs: created inside the jail's own `/dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// `/dev/kvm`.
    Kvm,
    /// `/dev/net/tun`, for tap NICs.
    Tun,
}

impl Device {
    /// Where the node lives, on the host and inside the jail.
    pub fn path(self) -> &'static Path {
        Path::new(match self {
            Device::Kvm => "/dev/kvm",
            Device::Tun => "/dev/net/tun",
        })
    }
}

/// `path` made absolute against the current directory, lexically (no link is resolved: the
/// VMM opens the same string inside the jail that it would have opened outside).
pub fn absolute(path: &Path) -> Result<PathBuf, FilesError> {
    std::path::absolute(path).map_err(|source| FilesError::Absolute {
        path: path.into(),
        source,
    })
}

/// The files of a disk: the image itself (writable unless `read_only`) and every image of
/// its backing chain (read-only), found by opening the chain read-only as the VMM will.
///
/// Every file an image of the chain opened is listed (a VMDK's extents too).
pub fn disk_files(
    path: &Path,
    format: Option<block::Format>,
    read_only: bool,
    allow_external_backing: bool,
) -> Result<Vec<JailFile>, FilesError> {
    let image = block::open(
        path,
        &block::OpenOptions {
            read_only: true,
            format,
            allow_external_backing,
        },
    )
    .map_err(|source| FilesError::Chain {
        path: path.into(),
        source,
    })?;
    let mut files = vec![JailFile {
        path: path.into(),
        writable: !read_only,
    }];
    // The top image's other files (extents) are written as the top image is; its
    // backing chain's files are read only.
    let chain: Vec<PathBuf> = image.backing().map(|b| b.files()).unwrap_or_default();
    for f in image.files() {
        if f != path && !chain.contains(&f) {
            files.push(JailFile {
                path: f,
                writable: !read_only,
            });
        }
    }
    for f in chain {
        files.push(JailFile {
            path: f,
            writable: false,
        });
    }
    Ok(merge(files))
}

/// Merge repeated paths: one entry each, writable if any use writes.
pub fn merge(files: Vec<JailFile>) -> Vec<JailFile> {
    let mut out: Vec<JailFile> = Vec::new();
    for f in files {
        match out.iter_mut().find(|o| o.path == f.path) {
            Some(o) => o.writable |= f.writable,
            None => out.push(f),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qcow2_chain_is_listed_top_first() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base.raw");
        let top = t.path().join("top.qcow2");
        block::create(&base, block::Format::Raw, 1 << 20, &Default::default()).unwrap();
        let opts = block::CreateOptions {
            backing: Some(("base.raw".into(), Some(block::Format::Raw))),
            ..Default::default()
        };
        block::create(&top, block::Format::Qcow2, 1 << 20, &opts).unwrap();
        let files = disk_files(&top, None, false, false).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(
            files[0],
            JailFile {
                path: top.clone(),
                writable: true
            }
        );
        assert_eq!(
            files[1],
            JailFile {
                path: base,
                writable: false
            }
        );
        assert!(matches!(
            disk_files(&t.path().join("missing"), None, false, false),
            Err(FilesError::Chain { .. })
        ));
    }

    #[test]
    fn merge_keeps_one_entry_per_path() {
        let f = |p: &str, w| JailFile {
            path: p.into(),
            writable: w,
        };
        let m = merge(vec![f("/a", false), f("/b", false), f("/a", true)]);
        assert_eq!(m, vec![f("/a", true), f("/b", false)]);
    }
}
