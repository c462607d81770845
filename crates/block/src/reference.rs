//! Names of other files recorded inside images (qcow2 backing files, VHD/VHDX parent
//! locators, VMDK extents and parents): resolving them against the image's directory and
//! refusing, unless allowed, names that reach outside it.
//!
//! Images are untrusted: a downloaded image naming `/etc/shadow` as its backing file, or a
//! VMDK descriptor naming `../../.ssh/authorized_keys` as a writable extent, must not get
//! vessel to open those files.

use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// Where the file `name`, recorded in the image at `image` as its `what` (backing file,
/// parent, extent), lives: relative names against the directory of `image`. Unless
/// `allow_external` is set, names that are absolute or contain `..` are refused.
pub fn resolve_reference(
    image: &Path,
    name: &Path,
    what: &'static str,
    allow_external: bool,
) -> Result<PathBuf> {
    if !allow_external {
        let refuse = |problem| {
            Err(Error::ExternalReference {
                image: image.to_path_buf(),
                what,
                name: name.to_path_buf(),
                problem,
            })
        };
        if name.has_root() {
            return refuse("is an absolute path");
        }
        if name.components().any(|c| c == Component::ParentDir) {
            return refuse("leaves the image's directory (..)");
        }
    }
    Ok(resolve_backing(image, name))
}

/// Where the backing file `name`, as recorded in the image at `image`, lives: absolute
/// names as they are, relative names against the directory of `image`. No policy: see
/// [`resolve_reference`] for the checked form used when opening.
pub fn resolve_backing(image: &Path, name: &Path) -> PathBuf {
    if name.is_absolute() {
        return name.to_path_buf();
    }
    match image.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
        _ => name.to_path_buf(),
    }
}

/// A Windows-style relative path (`.\dir\parent.vhd`) as a relative host path, `..`
/// components kept (so that [`resolve_reference`] sees them).
pub(crate) fn windows_relative(windows_path: &str) -> PathBuf {
    windows_path
        .split(['\\', '/'])
        .filter(|part| !part.is_empty() && *part != ".")
        .collect()
}

/// The first of the parent `names` (best first) recorded in the differencing image at
/// `child` that the policy allows and that exists (as any kind of file: opening it checks
/// the kind). When none does, the refusal of the first refused name, else "not found".
pub(crate) fn pick_parent(
    child: &Path,
    names: &[PathBuf],
    kind: &str,
    allow_external: bool,
) -> Result<PathBuf> {
    let mut refused = None;
    let mut tried = Vec::new();
    for name in names {
        match resolve_reference(child, name, "parent", allow_external) {
            Ok(path) if path.symlink_metadata().is_ok() => return Ok(path),
            Ok(path) => tried.push(path.display().to_string()),
            Err(e) => {
                refused.get_or_insert(e);
            }
        }
    }
    if let Some(e) = refused {
        return Err(e);
    }
    Err(Error::InvalidArgument(format!(
        "{}: parent of the differencing {kind} not found (tried: {})",
        child.display(),
        if tried.is_empty() {
            "no locators".into()
        } else {
            tried.join(", ")
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_backing_resolves_against_image_dir() {
        assert_eq!(
            resolve_backing(Path::new("/a/b/top.qcow2"), Path::new("base.raw")),
            PathBuf::from("/a/b/base.raw")
        );
        assert_eq!(
            resolve_backing(Path::new("top.qcow2"), Path::new("base.raw")),
            PathBuf::from("base.raw")
        );
        assert_eq!(
            resolve_backing(Path::new("/a/top.qcow2"), Path::new("/x/base")),
            PathBuf::from("/x/base")
        );
    }

    #[test]
    fn external_names_are_refused_unless_allowed() {
        let top = Path::new("/vms/a/top.qcow2");
        for name in ["/etc/shadow", "../b/base.raw", "sub/../../x", "//x"] {
            let err =
                resolve_reference(top, Path::new(name), "backing file", false).expect_err(name);
            assert!(matches!(err, Error::ExternalReference { .. }), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains(name) && msg.contains("allow-external-backing"),
                "{msg}"
            );
        }
        assert_eq!(
            resolve_reference(top, Path::new("/etc/x"), "backing file", true).unwrap(),
            PathBuf::from("/etc/x")
        );
        assert_eq!(
            resolve_reference(top, Path::new("./sub/base"), "extent", false).unwrap(),
            PathBuf::from("/vms/a/./sub/base")
        );
    }

    #[test]
    fn windows_names_keep_parent_components() {
        assert_eq!(windows_relative(".\\a\\b.vhd"), PathBuf::from("a/b.vhd"));
        assert_eq!(windows_relative("..\\b.vhd"), PathBuf::from("../b.vhd"));
        assert_eq!(windows_relative(""), PathBuf::new());
    }
}
