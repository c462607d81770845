//! Names users give VMs and images.

/// A letter or digit, then letters, digits, '-', '_' or '.', at most 63 bytes: usable as a
/// directory name and a host name label, never a path.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_labels() {
        assert!(valid_name("web-1.test_a") && valid_name("debian-12"));
        for bad in ["-x", "", "a/b", "..", ".hidden", "a b", "ä"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(!valid_name(&"a".repeat(64)) && valid_name(&"a".repeat(63)));
    }
}
