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

/// Problems of the `[[share]]` entries themselves: bad or repeated tags. A VM made from an
/// image (`from_image`) mounts each share at `/mnt/TAG`, which narrows the tags further.
pub fn problems(shares: &[ShareDef], from_image: bool) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    for (i, s) in shares.iter().enumerate() {
        let tag = s.tag.get_ref();
        if let Err(e) = check_tag(tag) {
            out.push((s.tag.span(), e.to_string()));
        } else if let (true, Err(e)) = (from_image, cloudinit::mounts::check_tag(tag)) {
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

#[cfg(test)]
mod tests {
    use crate::vmdef::VmDefinition;
    use std::path::Path;

    const BASE: &str = "name = \"dev\"\n[boot]\nkernel = \"bzImage\"\n";

    #[test]
    fn shares_are_checked_and_turned_into_vmm_shares() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        let text = format!(
            "{BASE}[[share]]\ndir = \"src\"\ntag = \"src\"\n\
             [[share]]\ndir = \"src\"\ntag = \"ro\"\nreadonly = true\n"
        );
        let mut def = VmDefinition::parse(Path::new("vm.toml"), &text).unwrap();
        def.resolve_paths(dir.path());
        let shares = super::to_shares(&def.shares).unwrap();
        assert_eq!(shares.len(), 2);
        assert_eq!(
            shares[0].dir,
            dir.path().join("src").canonicalize().unwrap()
        );
        assert!(!shares[0].readonly && shares[1].readonly);
    }

    #[test]
    fn bad_tags_and_missing_dirs_are_reported_at_their_line() {
        for (share, line, what) in [
            ("dir = \"a\"\ntag = \"\"", 6, "1 to 36 bytes"),
            ("dir = \"a\"\ntag = \"a:b\"", 6, "may not contain"),
            (
                "dir = \"a\"\ntag = \"src\"\n[[share]]\ndir = \"b\"\ntag = \"src\"",
                9,
                "used twice",
            ),
            ("dir = \"a\"", 4, "missing field `tag`"),
            ("dir = \"a\"\ntag = \"t\"\nmode = 1", 7, "unknown field"),
        ] {
            let text = format!("{BASE}[[share]]\n{share}\n");
            let e = VmDefinition::parse(Path::new("vm.toml"), &text).unwrap_err();
            assert_eq!(e.errors[0].line, line, "{share}: {e}");
            assert!(e.errors[0].message.contains(what), "{share}: {e}");
        }
        // An image VM mounts shares at /mnt/TAG: a tag with a space is refused there only.
        let spaced = format!("{BASE}[[share]]\ndir = \"a\"\ntag = \"my src\"\n");
        assert!(VmDefinition::parse(Path::new("vm.toml"), &spaced).is_ok());
        let image = format!("image = \"debian\"\n{spaced}");
        let e = VmDefinition::parse(Path::new("vm.toml"), &image).unwrap_err();
        assert!(e.errors[0].message.contains("/mnt/TAG"), "{e}");
        // vessel validate checks that the directory exists.
        let mut def = VmDefinition::parse(Path::new("vm.toml"), &spaced).unwrap();
        def.resolve_paths(Path::new("/nonexistent"));
        let e = def.check_files(Path::new("vm.toml"), &spaced).unwrap_err();
        assert!(
            e.errors
                .iter()
                .any(|e| e.message.contains("share directory")),
            "{e}"
        );
    }
}
