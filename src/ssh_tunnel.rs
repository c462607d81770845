//! `vessel migrate NAME --to ssh:[USER@]HOST[:PORT]:/REMOTE/SOCKET`: the migration stream
//! through OpenSSH, encrypted and authenticated, to a receiver listening on a unix socket
//! of the remote host (`vessel start NAME --incoming unix:/REMOTE/SOCKET` there). vessel
//! runs `ssh -N -L LOCAL:REMOTE` with the user's own ssh configuration and keys, waits for
//! the local end of the forward, and the VMM sends to `unix:LOCAL`; the tunnel is closed
//! when the migration ends. The confined VMM never runs ssh: it only connects to a socket.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long ssh gets to log in and open the forward.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error(
        "invalid ssh destination '{0}': expected ssh:[USER@]HOST[:PORT]:/PATH, the receiver's \
         unix socket on that host"
    )]
    Target(String),
    #[error("cannot run ssh: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("ssh to {dest} failed (exit status {status}): {stderr}")]
    Failed {
        dest: String,
        status: String,
        stderr: String,
    },
    #[error("ssh to {0} opened no tunnel within {OPEN_TIMEOUT:?}")]
    Timeout(String),
}

/// Where an ssh destination leads: the host (with its user), its ssh port, the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// `[USER@]HOST`, as ssh takes it.
    pub dest: String,
    pub port: Option<u16>,
    /// The receiver's unix socket on that host.
    pub remote: PathBuf,
}

impl std::str::FromStr for SshTarget {
    type Err = TunnelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TunnelError::Target(s.to_string());
        let rest = s.strip_prefix("ssh:").ok_or_else(bad)?;
        let (host, path) = rest.split_once(":/").ok_or_else(bad)?;
        let (dest, port) = match host.rsplit_once(':') {
            Some((dest, port)) => (dest, Some(port.parse::<u16>().map_err(|_| bad())?)),
            None => (host, None),
        };
        // A destination starting with '-' would be an ssh option.
        let plain = |c: char| !c.is_whitespace() && !c.is_control() && c != ':';
        if dest.is_empty() || dest.starts_with('-') || !dest.chars().all(plain) {
            return Err(bad());
        }
        if port == Some(0) || path.is_empty() || path.contains('\0') {
            return Err(bad());
        }
        Ok(SshTarget {
            dest: dest.to_string(),
            port,
            remote: PathBuf::from(format!("/{path}")),
        })
    }
}

/// A running `ssh -L`; closed (ssh killed, the local socket removed) when dropped.
pub struct SshTunnel {
    child: Child,
    local: PathBuf,
}

impl SshTunnel {
    /// Logs in to `target` and forwards the unix socket `local` to its socket; `options`
    /// are given to ssh as `-o` options (`IdentityFile=…`, `UserKnownHostsFile=…`).
    pub fn open(target: &SshTarget, local: &Path, options: &[String]) -> Result<Self, TunnelError> {
        let _ = std::fs::remove_file(local);
        let mut ssh = Command::new("ssh");
        ssh.args([
            "-N",
            "-o",
            "BatchMode=yes",
            "-o",
            "ExitOnForwardFailure=yes",
        ]);
        for option in options {
            ssh.arg("-o").arg(option);
        }
        if let Some(port) = target.port {
            ssh.arg("-p").arg(port.to_string());
        }
        ssh.arg("-L")
            .arg(format!("{}:{}", local.display(), target.remote.display()))
            .arg("--")
            .arg(&target.dest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = ssh.spawn().map_err(TunnelError::Spawn)?;
        let mut tunnel = SshTunnel {
            child,
            local: local.to_path_buf(),
        };
        tunnel.wait_open(&target.dest)?;
        Ok(tunnel)
    }

    /// Waits until ssh listens on the local socket, or fails with what ssh said.
    fn wait_open(&mut self, dest: &str) -> Result<(), TunnelError> {
        let start = Instant::now();
        while !self.local.exists() {
            if let Some(status) = self.child.try_wait().map_err(TunnelError::Spawn)? {
                let mut stderr = String::new();
                if let Some(mut err) = self.child.stderr.take() {
                    let _ = err.read_to_string(&mut stderr);
                }
                return Err(TunnelError::Failed {
                    dest: dest.to_string(),
                    status: status.to_string(),
                    stderr: stderr.trim().to_string(),
                });
            }
            if start.elapsed() > OPEN_TIMEOUT {
                return Err(TunnelError::Timeout(dest.to_string()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The local end, as a migration URL.
    pub fn url(&self) -> String {
        format!("unix:{}", self.local.display())
    }
}

impl Drop for SshTunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.local);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_name_a_host_a_port_and_an_absolute_socket() {
        let t: SshTarget = "ssh:root@host.example:2222:/run/vessel/in.sock"
            .parse()
            .unwrap();
        assert_eq!(t.dest, "root@host.example");
        assert_eq!(t.port, Some(2222));
        assert_eq!(t.remote, Path::new("/run/vessel/in.sock"));
        let t: SshTarget = "ssh:host:/tmp/s".parse().unwrap();
        assert_eq!((t.dest.as_str(), t.port), ("host", None));
        for bad in [
            "ssh:host",
            "ssh::/tmp/s",
            "ssh:-oProxyCommand=x:/tmp/s",
            "ssh:host:0:/tmp/s",
            "ssh:host:port:/tmp/s",
            "ssh:ho st:/tmp/s",
            "ssh:host:/",
            "unix:/tmp/s",
        ] {
            assert!(bad.parse::<SshTarget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_failed_login_is_reported_with_what_ssh_said() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens on port 1 of the loopback: ssh fails at once.
        let target: SshTarget = "ssh:127.0.0.1:1:/tmp/nothing.sock".parse().unwrap();
        let err = SshTunnel::open(&target, &dir.path().join("l.sock"), &[])
            .err()
            .expect("no tunnel")
            .to_string();
        assert!(err.contains("ssh to 127.0.0.1 failed"), "{err}");
        assert!(err.to_lowercase().contains("refused"), "{err}");
    }
}
