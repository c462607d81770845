//! Running `virtiofsd` (the Rust one, <https://gitlab.com/virtio-fs/virtiofsd>) for one
//! share: vessel starts it before confinement, waits for its socket, and stops it (kill,
//! reap) when the [`Virtiofsd`] is dropped with the VM.
//!
//! * Found as `$VESSEL_VIRTIOFSD`, else `virtiofsd` on `PATH`, else Debian's
//!   `/usr/libexec/virtiofsd`; missing, the error says how to install it.
//! * As non-root it runs with `--sandbox=namespace` (user namespaces); as root with its
//!   default sandbox.
//! * `readonly=on` needs `--readonly` (virtiofsd 1.11 and later); an older virtiofsd is an
//!   error rather than a writable share.
//! * A virtiofsd that knows `--migration-mode` (1.11 and later) runs with
//!   `--migration-mode=find-paths --migration-on-error=guest-error`: its state, saved for
//!   a snapshot or a migration, names the guest's inodes by their paths in the share
//!   (which needs no CAP_DAC_READ_SEARCH, unlike file handles). An inode with no path (a
//!   file removed from the host since, an open file the guest unlinked) does not fail the
//!   load, which would leave a suspended VM unresumable (its source is gone): the guest
//!   gets errors for that inode alone. An older virtiofsd runs without them and cannot
//!   save its state: snapshots refuse such a VM.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fs::Share;

/// The environment variable naming the virtiofsd binary.
pub const BINARY_ENV: &str = "VESSEL_VIRTIOFSD";
const LIBEXEC: &str = "/usr/libexec/virtiofsd";
/// How long virtiofsd may take to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors starting virtiofsd.
#[derive(Debug, thiserror::Error)]
pub enum VirtiofsdError {
    #[error(
        "virtiofsd is needed for shared folders and was not found (${BINARY_ENV}, PATH, \
         {LIBEXEC}): install it with `cargo install virtiofsd --locked` (needs Debian's \
         libseccomp-dev and libcap-ng-dev) or `apt install virtiofsd`"
    )]
    NotFound,
    #[error("cannot run {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} has no --readonly option (virtiofsd 1.11 or later has): cannot share {} readonly",
        binary.display(), dir.display()
    )]
    NoReadonly { binary: PathBuf, dir: PathBuf },
    #[error("virtiofsd for {} exited ({status}) before serving: {stderr}", dir.display())]
    Exited {
        dir: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("virtiofsd for {} did not create {} within {START_TIMEOUT:?}", dir.display(), socket.display())]
    Timeout { dir: PathBuf, socket: PathBuf },
}

/// Where virtiofsd is, or [`VirtiofsdError::NotFound`].
pub fn find() -> Result<PathBuf, VirtiofsdError> {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(VirtiofsdError::NotFound)
        };
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("virtiofsd"));
    on_path
        .chain(std::iter::once(PathBuf::from(LIBEXEC)))
        .find(|p| p.is_file())
        .ok_or(VirtiofsdError::NotFound)
}

/// The options of `binary` vessel uses that not every virtiofsd has (from its `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `--readonly`.
    pub readonly: bool,
    /// `--migration-mode` and `--migration-on-error`: the state can be saved.
    pub migration: bool,
}

/// Which [`Options`] `binary` knows.
pub fn options(binary: &Path) -> Result<Options, VirtiofsdError> {
    let out = Command::new(binary)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| VirtiofsdError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    let help = [out.stdout, out.stderr].concat();
    let help = String::from_utf8_lossy(&help);
    Ok(Options {
        readonly: help.contains("--readonly"),
        migration: help.contains("--migration-mode") && help.contains("--migration-on-error"),
    })
}

/// The command line for `share` served on `socket`.
pub fn arguments(
    share: &Share,
    socket: &Path,
    root: bool,
    options: Options,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "--socket-path".into(),
        socket.into(),
        "--shared-dir".into(),
        share.dir.clone().into(),
    ];
    if !root {
        args.push("--sandbox=namespace".into());
    }
    if share.readonly {
        args.push("--readonly".into());
    }
    if options.migration {
        args.push("--migration-mode=find-paths".into());
        args.push("--migration-on-error=guest-error".into());
    }
    args
}

/// A running virtiofsd; killed and reaped on drop.
#[derive(Debug)]
pub struct Virtiofsd {
    child: Child,
    socket: PathBuf,
    stopped: bool,
}

impl Virtiofsd {
    /// Start `binary` for `share` and wait until it listens on `socket`.
    pub fn start(binary: &Path, share: &Share, socket: &Path) -> Result<Self, VirtiofsdError> {
        let options = options(binary)?;
        if share.readonly && !options.readonly {
            return Err(VirtiofsdError::NoReadonly {
                binary: binary.to_path_buf(),
                dir: share.dir.clone(),
            });
        }
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let child = Command::new(binary)
            .args(arguments(share, socket, root, options))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| VirtiofsdError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })?;
        tracing::info!(pid = child.id(), dir = %share.dir.display(), tag = %share.tag, "virtiofsd started");
        let mut running = Self {
            child,
            socket: socket.to_path_buf(),
            stopped: false,
        };
        running.wait_for_socket(share)?;
        Ok(running)
    }

    /// The socket the device connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The device is connected: virtiofsd serves that one connection and accepts no other,
    /// so its socket and the `.pid` lock file it keeps beside it can go now (no stale files,
    /// and nothing left to remove once the VMM is confined).
    pub fn remove_socket(&self) {
        let _ = std::fs::remove_file(&self.socket);
        let mut pid_file = self.socket.clone().into_os_string();
        pid_file.push(".pid");
        let _ = std::fs::remove_file(pid_file);
    }

    /// Stop virtiofsd: kill and reap it, remove its socket. Does nothing the second time.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Err(err) = self.child.kill() {
            tracing::debug!(%err, "virtiofsd already gone");
        }
        match self.child.wait() {
            Ok(status) => tracing::info!(%status, "virtiofsd stopped"),
            Err(err) => tracing::warn!(%err, "cannot reap virtiofsd"),
        }
        // virtiofsd leaves its socket (and a .pid file) behind when killed.
        self.remove_socket();
    }

    fn wait_for_socket(&mut self, share: &Share) -> Result<(), VirtiofsdError> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    // Best effort: the message is only for the error text.
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(VirtiofsdError::Exited {
                    dir: share.dir.clone(),
                    status,
                    stderr: stderr.trim().to_string(),
                });
            }
            if self.socket.exists() {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(VirtiofsdError::Timeout {
                    dir: share.dir.clone(),
                    socket: self.socket.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let dir = tempfile::tempdir().unwrap();
        let share = Share::new(dir.path(), "t", true).unwrap();
        let all = Options {
            readonly: true,
            migration: true,
        };
        let args = arguments(&share, Path::new("/run/fs.sock"), false, all);
        let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        let want = dir.path().canonicalize().unwrap();
        assert_eq!(
            args,
            [
                "--socket-path",
                "/run/fs.sock",
                "--shared-dir",
                &want.to_string_lossy(),
                "--sandbox=namespace",
                "--readonly",
                "--migration-mode=find-paths",
                "--migration-on-error=guest-error",
            ]
        );
        let rw = Share::new(dir.path(), "t", false).unwrap();
        let old = Options {
            readonly: false,
            migration: false,
        };
        assert_eq!(arguments(&rw, Path::new("/s"), true, old).len(), 4);
    }

    #[test]
    fn a_virtiofsd_that_exits_is_reported_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("virtiofsd");
        std::fs::write(&fake, "#!/bin/sh\necho 'bad things' >&2\nexit 3\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let share = Share::new(dir.path(), "t", false).unwrap();
        let err = Virtiofsd::start(&fake, &share, &dir.path().join("s")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("bad things") && text.contains("exited"),
            "{text}"
        );
        // And readonly with a virtiofsd whose help lacks --readonly is refused.
        let ro = Share::new(dir.path(), "t", true).unwrap();
        let err = Virtiofsd::start(&fake, &ro, &dir.path().join("s")).unwrap_err();
        assert!(matches!(err, VirtiofsdError::NoReadonly { .. }), "{err}");
    }
}
