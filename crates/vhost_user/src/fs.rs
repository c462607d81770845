//! virtio-fs shares: the `HOST_DIR:TAG[,readonly=on]` spec users write (`vessel run
//! --share`, `[[share]]` in vm.toml), its validation, and the device's configuration space
//! (virtio 1.2 §5.11.4: `tag[36]` then `num_request_queues`, little-endian).

use std::path::{Path, PathBuf};

/// virtio device ID of a file-system device.
pub const DEVICE_ID: u16 = 26;
/// Longest tag the configuration space holds (it is not NUL-terminated when full).
pub const TAG_MAX: usize = 36;
/// Length of the configuration space.
pub const CONFIG_LEN: usize = TAG_MAX + 4;

/// A share the user asked for is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("share {spec:?}: expected HOST_DIR:TAG[,readonly=on|off]")]
    Syntax { spec: String },
    #[error("share {spec:?}: unknown option {option:?} (known: readonly=on|off)")]
    UnknownOption { spec: String, option: String },
    #[error("share tag {tag:?} is {len} bytes; virtio-fs tags are 1 to 36 bytes")]
    TagLength { tag: String, len: usize },
    #[error("share tag {tag:?} may not contain NUL, ':' or ','")]
    TagCharacters { tag: String },
    #[error("share directory {}: {source}", dir.display())]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("share directory {} is not a directory", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error("share tag {tag:?} is used twice; each share needs its own tag")]
    DuplicateTag { tag: String },
}

/// One host directory shared with the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Absolute, canonical host directory.
    pub dir: PathBuf,
    /// What the guest mounts: `mount -t virtiofs TAG /mnt`.
    pub tag: String,
    pub readonly: bool,
}

impl Share {
    /// A share of `dir` as `tag`, validated: `dir` exists and is a directory, the tag fits.
    pub fn new(dir: &Path, tag: &str, readonly: bool) -> Result<Self, ShareError> {
        check_tag(tag)?;
        let canonical = dir.canonicalize().map_err(|source| ShareError::Directory {
            dir: dir.to_path_buf(),
            source,
        })?;
        if !canonical.is_dir() {
            return Err(ShareError::NotADirectory {
                dir: dir.to_path_buf(),
            });
        }
        Ok(Self {
            dir: canonical,
            tag: tag.to_string(),
            readonly,
        })
    }

    /// Parse `HOST_DIR:TAG[,readonly=on|off]`. The tag is what follows the last `:`, so
    /// the directory may contain `:` (the tag may not).
    pub fn parse(spec: &str) -> Result<Self, ShareError> {
        let syntax = || ShareError::Syntax {
            spec: spec.to_string(),
        };
        let (dir, rest) = spec.rsplit_once(':').ok_or_else(syntax)?;
        let mut parts = rest.split(',');
        let tag = parts.next().ok_or_else(syntax)?;
        if dir.is_empty() {
            return Err(syntax());
        }
        let mut readonly = false;
        for option in parts {
            readonly = match option {
                "readonly=on" | "readonly=true" => true,
                "readonly=off" | "readonly=false" => false,
                _ => {
                    return Err(ShareError::UnknownOption {
                        spec: spec.to_string(),
                        option: option.to_string(),
                    })
                }
            };
        }
        Self::new(Path::new(dir), tag, readonly)
    }

    /// The device's configuration space for this share with `request_queues` queues.
    pub fn config_space(&self, request_queues: u32) -> [u8; CONFIG_LEN] {
        let mut config = [0u8; CONFIG_LEN];
        let tag = self.tag.as_bytes();
        let len = tag.len().min(TAG_MAX);
        config[..len].copy_from_slice(&tag[..len]);
        config[TAG_MAX..].copy_from_slice(&request_queues.to_le_bytes());
        config
    }
}

/// Whether `tag` can be a share's tag (1–36 bytes, no NUL, ':' or ',').
pub fn check_tag(tag: &str) -> Result<(), ShareError> {
    if tag.is_empty() || tag.len() > TAG_MAX {
        return Err(ShareError::TagLength {
            tag: tag.to_string(),
            len: tag.len(),
        });
    }
    if tag.contains(['\0', ':', ',']) {
        return Err(ShareError::TagCharacters {
            tag: tag.to_string(),
        });
    }
    Ok(())
}

/// Every tag in `shares` is distinct (the guest mounts by tag).
pub fn check_unique(shares: &[Share]) -> Result<(), ShareError> {
    for (i, share) in shares.iter().enumerate() {
        if shares[..i].iter().any(|s| s.tag == share.tag) {
            return Err(ShareError::DuplicateTag {
                tag: share.tag.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let share = Share::parse(&format!("{d}:data")).unwrap();
        assert_eq!(share.dir, dir.path().canonicalize().unwrap());
        assert_eq!((share.tag.as_str(), share.readonly), ("data", false));
        let share = Share::parse(&format!("{d}:data,readonly=on")).unwrap();
        assert!(share.readonly);
        let colon = dir.path().join("a:b");
        std::fs::create_dir(&colon).unwrap();
        let share = Share::parse(&format!("{}:t", colon.display())).unwrap();
        assert_eq!(share.tag, "t");
    }

    #[test]
    fn bad_specs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let long = "x".repeat(37);
        let cases = [
            ("nocolon".to_string(), "expected HOST_DIR:TAG"),
            (":tag".to_string(), "expected HOST_DIR:TAG"),
            (format!("{d}:"), "1 to 36 bytes"),
            (format!("{d}:{long}"), "1 to 36 bytes"),
            (format!("{d}:t,readonly=maybe"), "unknown option"),
            (format!("{d}:t,cache=always"), "unknown option"),
            (format!("{d}/missing:t"), "No such file"),
            (format!("{}:t", file.display()), "not a directory"),
        ];
        for (spec, want) in cases {
            let err = Share::parse(&spec).unwrap_err().to_string();
            assert!(err.contains(want), "{spec}: {err}");
        }
        assert!(Share::new(dir.path(), "a\0b", false).is_err());
        assert!(Share::new(dir.path(), &"x".repeat(36), false).is_ok());
    }

    #[test]
    fn tags_must_be_unique() {
        let dir = tempfile::tempdir().unwrap();
        let a = Share::new(dir.path(), "a", false).unwrap();
        let b = Share::new(dir.path(), "b", true).unwrap();
        assert!(check_unique(&[a.clone(), b]).is_ok());
        let err = check_unique(&[a.clone(), a]).unwrap_err();
        assert!(matches!(err, ShareError::DuplicateTag { .. }));
    }

    #[test]
    fn config_space_layout() {
        let dir = tempfile::tempdir().unwrap();
        let share = Share::new(dir.path(), "home", false).unwrap();
        let config = share.config_space(1);
        assert_eq!(&config[..4], b"home");
        assert!(config[4..TAG_MAX].iter().all(|&b| b == 0));
        assert_eq!(&config[TAG_MAX..], &1u32.to_le_bytes());
        let full = Share::new(dir.path(), &"t".repeat(36), false).unwrap();
        assert!(full.config_space(2)[..TAG_MAX].iter().all(|&b| b == b't'));
    }
}
