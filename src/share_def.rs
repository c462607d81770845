//! `[[share]]` in a VM definition: a host directory the guest mounts with virtio-fs
//! (`mount -t virtiofs TAG /mnt`; docs/shared-folders.md). Checked by `vessel validate`
//! (tags, duplicates, the directory exists) and turned into the VMM's shares.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;
use vhost_user::fs::{check_tag, Share};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShareDef {
    /// The host directory (relative to the definition's directory).
    pub dir: Spanned<PathBuf>,
    /// What the guest mounts (1–36 bytes, no ':', ',' or NUL; unique per VM).
    pub tag: Spanned<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
}

/// Problems of the `[[share]]` entries themselves: bad or repeated tags.
pub fn problems(shares: &[ShareDef]) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    for (i, s) in shares.iter().enumerate() {
        let tag = s.tag.get_ref();
        if let Err(e) = check_tag(tag) {
            out.push((s.tag.span(), e.to_string()));
        } else if shares[..i].iter().any(|o| o.tag.get_ref() == tag) {
            out.push((
                s.tag.span(),
                format!("share tag {tag:?} is used twice; each share needs its own tag"),
            ));
        }
    }
    out
}

/// Share directories that do not exist or are not directories (paths already absolute).
pub fn missing_dirs(shares: &[ShareDef]) -> Vec<(Range<usize>, String)> {
    shares
        .iter()
        .filter(|s| !s.dir.get_ref().is_dir())
        .map(|s| {
            (
                s.dir.span(),
                format!(
                    "share directory {} does not exist or is not a directory",
                    s.dir.get_ref().display()
                ),
            )
        })
        .collect()
}

/// Make relative directories absolute against `dir`.
pub fn resolve_paths(shares: &mut [ShareDef], dir: &Path) {
    for s in shares {
        if s.dir.get_ref().is_relative() {
            s.dir = Spanned::new(s.dir.span(), dir.join(s.dir.get_ref()));
        }
    }
}

/// The VMM's shares (directories canonicalised and checked again now).
pub fn to_shares(shares: &[ShareDef]) -> anyhow::Result<Vec<Share>> {
    let shares = shares
        .iter()
        .map(|s| Share::new(s.dir.get_ref(), s.tag.get_ref(), s.readonly))
        .collect::<Result<Vec<_>, _>>()?;
    vhost_user::fs::check_unique(&shares)?;
    Ok(shares)
}
