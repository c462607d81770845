//! The VM's ssh host keys, as cloud-init prints them on the serial console at first boot
//! (its `keys_to_console` module, on by default):
//!
//! ```text
//! -----BEGIN SSH HOST KEY KEYS-----
//! ecdsa-sha2-nistp256 AAAAE2VjZHNh... root@vm
//! ssh-ed25519 AAAAC3NzaC1lZDI1NTE5... root@vm
//! -----END SSH HOST KEY KEYS-----
//! ```
//!
//! [`parse_console_host_keys`] reads them back from console text and
//! [`known_hosts_lines`] turns them into `known_hosts` entries, so that vessel's ssh
//! client can check the host from the first connection on.

use crate::sshwire;
use crate::validate::next_token;

/// The line before the keys.
pub const BEGIN_MARKER: &str = "-----BEGIN SSH HOST KEY KEYS-----";
/// The line after the keys.
pub const END_MARKER: &str = "-----END SSH HOST KEY KEYS-----";

/// One host public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// The algorithm, e.g. `ssh-ed25519`.
    pub algo: String,
    /// The key blob in base64, as in a `.pub` file.
    pub base64: String,
}

/// Why `known_hosts` lines could not be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostKeyError {
    /// The host alias has characters that would break a `known_hosts` line.
    #[error("invalid host for known_hosts {0:?}: use letters, digits, '.', '-', '_' or ':'")]
    Host(String),
    /// A key's algorithm or base64 is not a valid public key.
    #[error("invalid host key {0:?}")]
    Key(String),
}

/// The host keys in the last complete `BEGIN`/`END SSH HOST KEY KEYS` block of `console`
/// (each boot prints one; a block whose `END` has not been printed yet is ignored, so a
/// caller can poll a growing console log until this returns keys).
///
/// Lines in the block that are not `ALGO BASE64 [comment]` with a valid key — kernel or
/// systemd messages interleaved on the console, say — are skipped, as are `\r`s and any
/// text before the algorithm on a line. Duplicate keys are dropped.
pub fn parse_console_host_keys(console: &str) -> Vec<HostKey> {
    let mut done: Vec<HostKey> = Vec::new();
    let mut current: Option<Vec<HostKey>> = None;
    for line in console.lines() {
        if line.contains(BEGIN_MARKER) {
            current = Some(Vec::new());
        } else if line.contains(END_MARKER) {
            if let Some(keys) = current.take() {
                done = keys;
            }
        } else if let Some(keys) = current.as_mut() {
            if let Some(key) = key_in_line(line) {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
    }
    done
}

/// The first `ALGO BASE64` pair in `line` that is a valid public key.
fn key_in_line(line: &str) -> Option<HostKey> {
    let mut rest = line.trim_end_matches('\r');
    loop {
        let (word, after) = next_token(rest);
        if word.is_empty() {
            return None;
        }
        if sshwire::known_algorithm(word) {
            let (blob, _) = next_token(after);
            if sshwire::blob_matches(word, blob) {
                return Some(HostKey {
                    algo: word.to_string(),
                    base64: blob.to_string(),
                });
            }
        }
        rest = after;
    }
}

/// `known_hosts` lines for these keys of `host` (an address or name) on `port`:
/// `[host]:port algo base64`, or `host algo base64` for port 22, one per line.
pub fn known_hosts_lines(host: &str, port: u16, keys: &[HostKey]) -> Result<String, HostKeyError> {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':');
    if host.is_empty() || host.len() > 255 || !host.bytes().all(ok_char) {
        return Err(HostKeyError::Host(host.to_string()));
    }
    let target = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let mut out = String::new();
    for key in keys {
        if !sshwire::known_algorithm(&key.algo) || !sshwire::blob_matches(&key.algo, &key.base64) {
            return Err(HostKeyError::Key(format!("{} {}", key.algo, key.base64)));
        }
        out.push_str(&format!("{target} {} {}\n", key.algo, key.base64));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sshwire::tests::fake_blob;

    fn console(ed: &str, ec: &str) -> String {
        format!(
            "[   5.1] systemd[1]: Started foo.\r\n\
             cloud-init[612]: #############################################################\r\n\
             cloud-init[612]: -----BEGIN SSH HOST KEY FINGERPRINTS-----\r\n\
             cloud-init[612]: 256 SHA256:abc root@vm (ED25519)\r\n\
             cloud-init[612]: -----END SSH HOST KEY FINGERPRINTS-----\r\n\
             {BEGIN_MARKER}\r\n\
             ecdsa-sha2-nistp256 {ec} root@vm\r\n\
             [   7.2] random: crng init done\r\n\
             ssh-ed25519 {ed} root@vm\r\n\
             ssh-ed25519 {ed} root@vm\r\n\
             ssh-rsa AAAAbroken root@vm\r\n\
             {END_MARKER}\r\n\
             Debian GNU/Linux 12 vm ttyS0\r\n"
        )
    }

    #[test]
    fn parses_the_block() {
        let (ed, ec) = (fake_blob("ssh-ed25519"), fake_blob("ecdsa-sha2-nistp256"));
        let keys = parse_console_host_keys(&console(&ed, &ec));
        assert_eq!(
            keys,
            vec![
                HostKey {
                    algo: "ecdsa-sha2-nistp256".into(),
                    base64: ec
                },
                HostKey {
                    algo: "ssh-ed25519".into(),
                    base64: ed
                },
            ]
        );
    }

    #[test]
    fn last_complete_block_wins() {
        let (a, b) = (fake_blob("ssh-ed25519"), fake_blob("ssh-rsa"));
        let text = format!(
            "{BEGIN_MARKER}\nssh-ed25519 {a}\n{END_MARKER}\n{BEGIN_MARKER}\nssh-rsa {b} x\n{END_MARKER}\n\
             {BEGIN_MARKER}\nssh-ed25519 {a}\n"
        );
        let keys = parse_console_host_keys(&text);
        assert_eq!(
            keys,
            vec![HostKey {
                algo: "ssh-rsa".into(),
                base64: b
            }]
        );
    }

    #[test]
    fn prefixed_lines_and_garbage() {
        let a = fake_blob("ssh-ed25519");
        let text = format!("x: {BEGIN_MARKER}\nfoo: ssh-ed25519 {a} root@h\n\u{0}\u{ff}\nssh-ed25519\n{END_MARKER}");
        assert_eq!(parse_console_host_keys(&text).len(), 1);
        assert!(parse_console_host_keys("").is_empty());
        assert!(parse_console_host_keys(END_MARKER).is_empty());
    }

    #[test]
    fn known_hosts() {
        let key = HostKey {
            algo: "ssh-ed25519".into(),
            base64: fake_blob("ssh-ed25519"),
        };
        let lines = known_hosts_lines("127.0.0.1", 2222, std::slice::from_ref(&key));
        assert_eq!(
            lines,
            Ok(format!("[127.0.0.1]:2222 ssh-ed25519 {}\n", key.base64))
        );
        let lines = known_hosts_lines("vm", 22, std::slice::from_ref(&key));
        assert_eq!(lines, Ok(format!("vm ssh-ed25519 {}\n", key.base64)));
        assert!(known_hosts_lines("a b", 22, &[]).is_err());
        assert!(known_hosts_lines("h\n", 22, &[]).is_err());
        let bad = HostKey {
            algo: "ssh-ed25519".into(),
            base64: "AAAA\nx".into(),
        };
        assert!(known_hosts_lines("h", 22, &[bad]).is_err());
    }
}
