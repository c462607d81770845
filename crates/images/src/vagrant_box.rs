//! Vagrant boxes vessel reads: `libvirt` boxes, a tar archive (plain or gzip-compressed)
//! holding `box.img` (qcow2), `metadata.json`
//! (`{"provider":"libvirt","format":"qcow2","virtual_size":N}`) and optionally a
//! `Vagrantfile`; and `vessel` boxes (provider "vessel", `box.img` in any format vessel
//! reads), which [`pack_box`] writes.
//!
//! The archive is hostile input: it is read as a stream, only regular files (plain or GNU
//! sparse, as vessel writes them) at the top level are looked at (`./` prefixes allowed),
//! names with `..` or a leading `/` and links are refused, `metadata.json` is bounded in
//! size, and only `box.img` is written, to a fixed name in the directory the caller gives.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// Largest `metadata.json` accepted.
const MAX_METADATA: u64 = 64 << 10;
/// The gzip magic.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a Vagrant box: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: the box has no metadata.json; a Vagrant libvirt box holds box.img and metadata.json")]
    NoMetadata { path: PathBuf },
    #[error("{path}: the box has no box.img disk")]
    NoDisk { path: PathBuf },
    #[error("{path}: a box for the '{provider}' provider; vessel imports boxes for the \"vessel\" and \"libvirt\" (qcow2) providers")]
    WrongProvider { path: PathBuf, provider: String },
    #[error("{path} exists already; vessel does not replace it")]
    Exists { path: PathBuf },
    #[error("{path}: box.img has {size} bytes, more than the {free} bytes free in {dir}")]
    NoSpace {
        path: PathBuf,
        size: u64,
        free: u64,
        dir: PathBuf,
    },
    #[error("{path}: entry '{name}' is refused: {reason}")]
    BadEntry {
        path: PathBuf,
        name: String,
        reason: &'static str,
    },
}

/// What `metadata.json` says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct BoxMetadata {
    pub provider: Option<String>,
    pub format: Option<String>,
    /// In GiB, as vagrant-libvirt writes it.
    pub virtual_size: Option<u64>,
}

/// Whether `path` looks like a Vagrant box: a `.box` name, or a tar (ustar magic) or gzip
/// file that is not a disk image.
pub fn looks_like_box(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "box") {
        return true;
    }
    let mut head = [0u8; 265];
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let n = read_up_to(&mut f, &mut head);
    n >= 2 && head[..2] == GZIP_MAGIC || n >= 262 && &head[257..262] == b"ustar"
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// Unpack the box at `src`: `box.img` is written to `dir/box.img`; returns its path and
/// the checked metadata. `dir` must exist; the caller removes it on failure.
pub fn unpack_box(src: &Path, dir: &Path) -> Result<(PathBuf, BoxMetadata), BoxError> {
    let io = |source| BoxError::Io {
        path: src.to_path_buf(),
        source,
    };
    let mut file = File::open(src).map_err(io)?;
    let mut magic = [0u8; 2];
    let gz = read_up_to(&mut file, &mut magic) == 2 && magic == GZIP_MAGIC;
    let file = File::open(src).map_err(io)?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut archive = tar::Archive::new(reader);
    let invalid = |reason: String| BoxError::Invalid {
        path: src.to_path_buf(),
        reason,
    };
    let mut metadata = None;
    let mut disk = None;
    for entry in archive
        .entries()
        .map_err(|e| invalid(format!("cannot read the tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| invalid(format!("cannot read the tar archive: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let bad = |reason| BoxError::BadEntry {
            path: src.to_path_buf(),
            name: name.clone(),
            reason,
        };
        let Some(top) = top_level_name(Path::new(&name)).map_err(bad)? else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() && !kind.is_gnu_sparse() {
            return Err(bad(
                "only regular files are accepted in a box (no links or devices)",
            ));
        }
        match top.as_str() {
            "metadata.json" if metadata.is_none() => {
                metadata = Some(read_metadata(&mut entry, src)?);
            }
            "box.img" if disk.is_none() => {
                // A GNU sparse entry stores less than it expands to: check the expanded size.
                let size = match entry.header().as_gnu() {
                    Some(gnu) if kind.is_gnu_sparse() => gnu.real_size().unwrap_or(u64::MAX),
                    _ => entry.header().size().unwrap_or(u64::MAX),
                };
                if let Some(free) = available_bytes(dir).filter(|f| size > *f) {
                    return Err(BoxError::NoSpace {
                        path: src.to_path_buf(),
                        size,
                        free,
                        dir: dir.to_path_buf(),
                    });
                }
                let dest = dir.join("box.img");
                let mut out = File::create_new(&dest).map_err(|source| BoxError::Io {
                    path: dest.clone(),
                    source,
                })?;
                crate::copy::sparse_copy_hashed_from(&mut entry, &mut out).map_err(|source| {
                    BoxError::Io {
                        path: dest.clone(),
                        source,
                    }
                })?;
                disk = Some(dest);
            }
            "metadata.json" | "box.img" => return Err(bad("appears twice in the box")),
            _ => {}
        }
    }
    let metadata = metadata.ok_or_else(|| BoxError::NoMetadata {
        path: src.to_path_buf(),
    })?;
    check_metadata(&metadata, src)?;
    let disk = disk.ok_or_else(|| BoxError::NoDisk {
        path: src.to_path_buf(),
    })?;
    Ok((disk, metadata))
}

/// Bytes an unprivileged user could still write under `dir`.
fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data, for which all-zero bytes are a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a valid, writable statvfs that
    // outlives the call.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The name of a top-level file (`x` or `./x`), `None` for deeper entries and `.`;
/// an error for absolute names and `..`.
fn top_level_name(path: &Path) -> Result<Option<String>, &'static str> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => parts.push(p),
            Component::ParentDir => return Err("'..' in an archive name"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute archive name"),
        }
    }
    Ok(match parts.as_slice() {
        [one] => Some(one.to_string_lossy().into_owned()),
        _ => None,
    })
}

fn read_metadata(entry: &mut impl Read, src: &Path) -> Result<BoxMetadata, BoxError> {
    let mut text = Vec::new();
    entry
        .take(MAX_METADATA + 1)
        .read_to_end(&mut text)
        .map_err(|source| BoxError::Io {
            path: src.to_path_buf(),
            source,
        })?;
    if text.len() as u64 > MAX_METADATA {
        return Err(BoxError::Invalid {
            path: src.to_path_buf(),
            reason: format!("metadata.json is larger than {MAX_METADATA} bytes"),
        });
    }
    serde_json::from_slice(&text).map_err(|e| BoxError::Invalid {
        path: src.to_path_buf(),
        reason: format!("metadata.json: {e}"),
    })
}

fn check_metadata(m: &BoxMetadata, src: &Path) -> Result<(), BoxError> {
    let provider = m.provider.as_deref().unwrap_or("");
    if provider == pack::VESSEL_PROVIDER {
        return Ok(()); // box.img in any format vessel reads, detected at import
    }
    if provider != "libvirt" {
        return Err(BoxError::WrongProvider {
            path: src.to_path_buf(),
            provider: if provider.is_empty() {
                "(none)".into()
            } else {
                provider.into()
            },
        });
    }
    match m.format.as_deref() {
        None | Some("qcow2") => Ok(()),
        Some(other) => Err(BoxError::Invalid {
            path: src.to_path_buf(),
            reason: format!("metadata.json names format \"{other}\"; libvirt boxes hold qcow2"),
        }),
    }
}

mod pack;
pub use pack::{pack_box, VESSEL_PROVIDER};

#[cfg(test)]
mod tests;
