//! Checks on everything vessel puts into a seed: host names (RFC 1123), instance ids, user
//! names, MAC addresses and `authorized_keys` lines. A value that passes has no line
//! breaks or control characters, so it cannot change the structure of a YAML document.

use crate::sshwire;

/// Why a seed input was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidateError {
    /// The host name is not an RFC 1123 name.
    #[error("invalid hostname {0:?}: {1}")]
    Hostname(String, &'static str),
    /// The instance id is empty, too long or has characters outside `[A-Za-z0-9._:-]`.
    #[error("invalid instance id {0:?}: 1 to 128 of A-Z a-z 0-9 . _ : -, not \".\" or \"..\"")]
    InstanceId(String),
    /// The default user's name is not a portable Linux user name.
    #[error("invalid user name {0:?}: 1 to 32 of a-z 0-9 _ -, starting with a letter or _")]
    UserName(String),
    /// A MAC address is multicast or all zeros.
    #[error("invalid MAC address {0}: multicast or all zeros")]
    Mac(String),
    /// Two NICs have the same MAC address.
    #[error("two NICs have MAC address {0}")]
    DuplicateMac(String),
    /// An `authorized_keys` line is malformed (the index is its position in the list).
    #[error("ssh key {index}: {reason}")]
    SshKey {
        /// Position of the key in `ssh_authorized_keys`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A share tag that cannot name the mount point `/mnt/TAG` in a cloud image.
    #[error(
        "share tag {0:?}: a VM made from an image mounts it at /mnt/TAG, so the tag must be \
         1 to 36 of A-Z a-z 0-9 . _ -, not \".\" or \"..\""
    )]
    MountTag(String),
}

/// Checks an RFC 1123 host name (a single label or dotted FQDN, at most 253 characters,
/// labels of 1 to 63 letters, digits and inner hyphens).
pub fn hostname(name: &str) -> Result<(), ValidateError> {
    let err = |why| Err(ValidateError::Hostname(name.to_string(), why));
    if name.is_empty() || name.len() > 253 {
        return err("must be 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return err("each dot-separated label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return err("only letters, digits, hyphens and dots are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return err("a label cannot start or end with a hyphen");
        }
    }
    Ok(())
}

/// Checks an instance id: cloud-init uses it as a directory name under
/// `/var/lib/cloud/instances`, so no slashes, spaces or dot-only names.
pub fn instance_id(id: &str) -> Result<(), ValidateError> {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
    if id.is_empty() || id.len() > 128 || id == "." || id == ".." || !id.bytes().all(ok_char) {
        return Err(ValidateError::InstanceId(id.to_string()));
    }
    Ok(())
}

/// Checks a user name: `[a-z_][a-z0-9_-]{0,31}` (what Debian's adduser accepts by default).
pub fn user_name(name: &str) -> Result<(), ValidateError> {
    let bytes = name.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_lowercase() || *b == b'_');
    let rest_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if !first_ok || !rest_ok || bytes.len() > 32 {
        return Err(ValidateError::UserName(name.to_string()));
    }
    Ok(())
}

/// Formats a MAC address as cloud-init compares them: lower-case, colon-separated.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// Checks that a NIC's MAC address is a unicast, non-zero address.
pub fn mac(mac: &[u8; 6]) -> Result<(), ValidateError> {
    if mac[0] & 1 != 0 || mac.iter().all(|b| *b == 0) {
        return Err(ValidateError::Mac(format_mac(mac)));
    }
    Ok(())
}

/// Checks that no two MAC addresses are the same.
pub fn distinct_macs<'a>(macs: impl IntoIterator<Item = &'a [u8; 6]>) -> Result<(), ValidateError> {
    let mut seen: Vec<&[u8; 6]> = Vec::new();
    for m in macs {
        if seen.contains(&m) {
            return Err(ValidateError::DuplicateMac(format_mac(m)));
        }
        seen.push(m);
    }
    Ok(())
}

/// Splits off the first blank-separated token of `s`; the rest comes back trimmed.
pub(crate) fn next_token(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

/// Checks one `authorized_keys` line, `ALGO BASE64 [comment]` (no options), and returns
/// it trimmed, with single spaces between the algorithm, the key and the comment.
pub fn authorized_key(index: usize, line: &str) -> Result<String, ValidateError> {
    let err = |reason: String| Err(ValidateError::SshKey { index, reason });
    let line = line.trim();
    if line.len() > sshwire::MAX_BLOB_LEN + 1024 {
        return err("longer than any supported key".into());
    }
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return err("contains a line break or control character (give one key per entry)".into());
    }
    let (algo, rest) = next_token(line);
    let (blob, comment) = next_token(rest);
    if !sshwire::known_algorithm(algo) {
        return err(format!(
            "expected `ALGO BASE64 [comment]` with ALGO one of {}, not {algo:?}",
            sshwire::KEY_ALGORITHMS.join(", ")
        ));
    }
    if !sshwire::blob_matches(algo, blob) {
        return err(format!(
            "the base64 key data is not a valid {algo} public key"
        ));
    }
    Ok(if comment.is_empty() {
        format!("{algo} {blob}")
    } else {
        format!("{algo} {blob} {comment}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sshwire::tests::fake_blob;

    #[test]
    fn hostnames() {
        for ok in ["vm", "vm-1", "a.b.c", "x1", "1", "yes", &"a".repeat(63)] {
            assert_eq!(hostname(ok), Ok(()), "{ok}");
        }
        let long = ["a"; 130].join(".");
        for bad in [
            "",
            "-vm",
            "vm-",
            "a..b",
            "vm_1",
            "vm 1",
            "vm\n",
            "é",
            &"a".repeat(64),
            &long,
        ] {
            assert!(hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instance_ids() {
        assert!(instance_id("vm-01.i:x_y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a\nb", &"a".repeat(129)] {
            assert!(instance_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_names() {
        assert!(user_name("vessel").is_ok());
        assert!(user_name("_x-1").is_ok());
        for bad in ["", "1x", "Root", "a b", "a:b", &"a".repeat(33)] {
            assert!(user_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn macs() {
        assert!(mac(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]).is_ok());
        assert!(mac(&[1, 0, 0, 0, 0, 0]).is_err());
        assert!(mac(&[0; 6]).is_err());
        assert_eq!(
            format_mac(&[0x52, 0x54, 0, 0xab, 0xcd, 0xef]),
            "52:54:00:ab:cd:ef"
        );
        let a = [2, 0, 0, 0, 0, 1];
        assert!(distinct_macs([&a, &[2, 0, 0, 0, 0, 2]]).is_ok());
        assert!(distinct_macs([&a, &a]).is_err());
    }

    #[test]
    fn keys_are_normalised() {
        let blob = fake_blob("ssh-ed25519");
        let line = format!("  ssh-ed25519 \t{blob}   me@host  laptop \n");
        assert_eq!(
            authorized_key(0, &line),
            Ok(format!("ssh-ed25519 {blob} me@host  laptop"))
        );
        assert_eq!(
            authorized_key(0, &format!("ssh-ed25519 {blob}")),
            Ok(format!("ssh-ed25519 {blob}"))
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        let blob = fake_blob("ssh-ed25519");
        let bad = [
            String::new(),
            "ssh-ed25519".to_string(),
            format!("ssh-rsa {blob}"),
            format!("ssh-dss {blob}"),
            format!("no-pty ssh-ed25519 {blob}"),
            format!("ssh-ed25519 {blob} a\nssh-ed25519 {blob} b"),
            format!("ssh-ed25519 {blob} x\u{7}"),
        ];
        for (i, line) in bad.iter().enumerate() {
            let e = authorized_key(i, line).unwrap_err();
            assert!(
                matches!(e, ValidateError::SshKey { index, .. } if index == i),
                "{line}"
            );
        }
    }
}
