//! The VM owner's ssh key pair: an ed25519 key made once with OpenSSH's `ssh-keygen` in a
//! directory of vessel's (mode 0700, private key 0600) and reused from then on.
//!
//! Two vessels starting at once both may generate a key; each writes under a temporary
//! name and hard-links it into place, so exactly one key wins and the other is removed.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The key's file name in its directory.
pub const KEY_NAME: &str = "id_ed25519";

/// Why the key pair could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// `ssh-keygen` could not be run (OpenSSH's client tools are not installed?).
    #[error("cannot run ssh-keygen (install OpenSSH's client, e.g. apt-get install openssh-client): {0}")]
    Spawn(io::Error),
    /// `ssh-keygen` failed.
    #[error("ssh-keygen {args} failed: {stderr}")]
    Keygen {
        /// Its arguments.
        args: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// The paths of a key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The private key (mode 0600).
    pub private_key: PathBuf,
    /// The public key, `ALGO BASE64 COMMENT` on one line.
    pub public_key: PathBuf,
}

impl KeyPair {
    /// The public key's line, trimmed, for [`crate::SeedConfig::ssh_authorized_keys`].
    pub fn public_key_line(&self) -> Result<String, KeyError> {
        let text =
            fs::read_to_string(&self.public_key).map_err(io_err("read", &self.public_key))?;
        Ok(text.trim().to_string())
    }
}

/// Maps an io::Error to [`KeyError::Io`].
fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> KeyError + 'a {
    move |source| KeyError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Returns `dir/id_ed25519` and its `.pub`, creating `dir` (0700) and the key pair with
/// `ssh-keygen -t ed25519 -N "" -C vessel` on first use. An existing private key is kept
/// (its mode set to 0600); a missing `.pub` is derived from it with `ssh-keygen -y`.
pub fn ensure_user_key(dir: &Path) -> Result<KeyPair, KeyError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create directory", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("chmod", dir))?;
    let pair = KeyPair {
        private_key: dir.join(KEY_NAME),
        public_key: dir.join(format!("{KEY_NAME}.pub")),
    };
    if !pair.private_key.exists() {
        generate(dir, &pair)?;
    }
    let private = &pair.private_key;
    fs::set_permissions(private, fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod", private))?;
    if !pair.public_key.exists() {
        derive_public(&pair)?;
    }
    Ok(pair)
}

/// Runs ssh-keygen with these arguments, stdin closed.
fn keygen(args: &[&OsStr]) -> Result<Vec<u8>, KeyError> {
    let out = Command::new("ssh-keygen")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(KeyError::Spawn)?;
    if !out.status.success() {
        return Err(KeyError::Keygen {
            args: args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// Makes a new key pair under a temporary name and links it into place.
fn generate(dir: &Path, pair: &KeyPair) -> Result<(), KeyError> {
    let tmp = dir.join(format!(".{KEY_NAME}.tmp.{}", std::process::id()));
    let mut tmp_pub = tmp.clone().into_os_string();
    tmp_pub.push(".pub");
    let tmp_pub = PathBuf::from(tmp_pub);
    let _ = fs::remove_file(&tmp);
    let _ = fs::remove_file(&tmp_pub);
    let result = (|| {
        let mut args: Vec<&OsStr> = ["-q", "-t", "ed25519", "-N", "", "-C", "vessel", "-f"]
            .iter()
            .map(OsStr::new)
            .collect();
        args.push(tmp.as_os_str());
        keygen(&args)?;
        match fs::hard_link(&tmp, &pair.private_key) {
            Ok(()) => fs::rename(&tmp_pub, &pair.public_key).map_err(io_err("rename", &tmp_pub)),
            // Another vessel got there first: use its key.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_err("link", &pair.private_key)(e)),
        }
    })();
    let _ = fs::remove_file(&tmp);
    let _ = fs::remove_file(&tmp_pub);
    result
}

/// Writes the `.pub` file from the private key (`ssh-keygen -y`), atomically.
fn derive_public(pair: &KeyPair) -> Result<(), KeyError> {
    let line = keygen(&[
        OsStr::new("-y"),
        OsStr::new("-f"),
        pair.private_key.as_os_str(),
    ])?;
    let tmp = pair
        .public_key
        .with_extension(format!("pub.tmp.{}", std::process::id()));
    fs::write(&tmp, line).map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, &pair.public_key).map_err(io_err("rename", &tmp))
}
