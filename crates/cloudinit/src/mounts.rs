//! Shared folders mounted by cloud-init: one `mounts:` entry per virtio-fs share of the VM,
//! so a cloud image mounts each share at `/mnt/TAG` on its first boot (the form Lima uses:
//! `[TAG, /mnt/TAG, virtiofs, "rw,nofail", "0", "0"]`; cloud-init writes it to /etc/fstab).
//! `nofail` keeps a boot going when a share is missing.

use crate::validate::ValidateError;

/// A virtio-fs share the guest mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedMount {
    /// The share's tag (what `mount -t virtiofs TAG` names).
    pub tag: String,
    pub readonly: bool,
}

/// Where the guest mounts share `tag`.
pub fn mount_point(tag: &str) -> String {
    format!("/mnt/{tag}")
}

/// The tag must make a plain path component and an fstab field: letters, digits, '.', '_'
/// and '-', at most 36 bytes (virtio-fs's limit), not `.` or `..`.
pub fn check_tag(tag: &str) -> Result<(), ValidateError> {
    let ok = (1..=36).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && tag != "."
        && tag != "..";
    if ok {
        Ok(())
    } else {
        Err(ValidateError::MountTag(tag.to_string()))
    }
}

/// The `mounts:` entries for `mounts` (tags already checked).
pub fn entries(mounts: &[SeedMount]) -> Vec<[String; 6]> {
    mounts
        .iter()
        .map(|m| {
            let options = if m.readonly { "ro,nofail" } else { "rw,nofail" };
            [
                m.tag.clone(),
                mount_point(&m.tag),
                "virtiofs".into(),
                options.into(),
                "0".into(),
                "0".into(),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_must_be_plain_path_components() {
        for good in ["src", "data-1", "a.b_c", &"x".repeat(36)] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "a\tb", "ünï", &"x".repeat(37)] {
            let e = check_tag(bad).unwrap_err().to_string();
            assert!(e.contains("/mnt/TAG"), "{bad}: {e}");
        }
    }
}
