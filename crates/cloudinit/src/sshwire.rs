//! The OpenSSH public-key text form, `ALGO BASE64 [comment]`: which algorithms vessel
//! accepts, and a check that the base64 blob decodes and names the same algorithm (the
//! wire format starts with a length-prefixed algorithm string).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Public-key algorithms accepted for user keys and host keys. `ssh-dss` is not: OpenSSH
/// disabled it, and cloud-init keeps it off the console by default.
pub const KEY_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// The longest base64 blob accepted (a 16384-bit RSA key is about 2.8 KiB of base64).
pub const MAX_BLOB_LEN: usize = 8192;

/// True when `algo` is one of [`KEY_ALGORITHMS`].
pub fn known_algorithm(algo: &str) -> bool {
    KEY_ALGORITHMS.contains(&algo)
}

/// True when `blob` is padded standard base64 of an SSH public key whose embedded
/// algorithm name is `algo` and which carries key material after that name.
pub fn blob_matches(algo: &str, blob: &str) -> bool {
    if blob.is_empty() || blob.len() > MAX_BLOB_LEN {
        return false;
    }
    let Ok(bytes) = STANDARD.decode(blob) else {
        return false;
    };
    let Some(len_bytes) = bytes.get(..4) else {
        return false;
    };
    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    let Ok(len) = usize::try_from(len) else {
        return false;
    };
    let Some(end) = len.checked_add(4) else {
        return false;
    };
    match bytes.get(4..end) {
        Some(name) => name == algo.as_bytes() && bytes.len() > end,
        None => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A syntactically valid key blob for `algo` (not a real key: 32 bytes of 0x42).
    pub(crate) fn fake_blob(algo: &str) -> String {
        let mut bytes = Vec::new();
        let len = u32::try_from(algo.len()).unwrap_or(0);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(algo.as_bytes());
        bytes.extend_from_slice(&32u32.to_be_bytes());
        bytes.extend_from_slice(&[0x42; 32]);
        STANDARD.encode(bytes)
    }

    #[test]
    fn blob_names_its_algorithm() {
        let blob = fake_blob("ssh-ed25519");
        assert!(blob.starts_with("AAAAC3NzaC1lZDI1NTE5"));
        assert!(blob_matches("ssh-ed25519", &blob));
        assert!(!blob_matches("ssh-rsa", &blob));
    }

    #[test]
    fn bad_blobs_are_refused() {
        for blob in [
            "",
            "AAAA",
            "not base64!",
            "AAAAC3NzaC1lZDI1NTE5",
            "/////w==",
        ] {
            assert!(!blob_matches("ssh-ed25519", blob), "{blob}");
        }
        let huge = "A".repeat(MAX_BLOB_LEN + 4);
        assert!(!blob_matches("ssh-ed25519", &huge));
    }

    #[test]
    fn algorithms() {
        assert!(known_algorithm("ssh-ed25519"));
        assert!(!known_algorithm("ssh-dss"));
        assert!(!known_algorithm("SSH-ED25519"));
    }
}
