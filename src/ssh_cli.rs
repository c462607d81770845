//! `vessel ssh` and `vessel cp`: OpenSSH's client over the VM's forwarded port, with
//! vessel's key and a known_hosts file of vessel's own. For a VM made from an image the
//! host keys come from the VM's console, where cloud-init prints them, so the first
//! connection is verified too; other VMs' keys are trusted on first use.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::Args;

use crate::state::{self, StateDir, VmDir, VmState};
use crate::vmdef::VmDefinition;

const KNOWN_HOSTS: &str = "known_hosts";

#[derive(Debug, Args)]
pub struct SshArgs {
    /// The running VM to log in to.
    pub name: String,
    /// User to log in as (default: the definition's [ssh] user, else root).
    #[arg(long)]
    pub user: Option<String>,
    /// Seconds to wait for the guest's sshd (and its host keys on the console).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Command to run instead of a shell; its exit status is vessel's.
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: a host path or NAME:PATH in a VM.
    pub src: String,
    /// Destination: a host path or NAME:PATH in a VM.
    pub dst: String,
    /// User to log in as (default: the definition's [ssh] user, else root).
    #[arg(long)]
    pub user: Option<String>,
    /// Seconds to wait for the guest's sshd (and its host keys on the console).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct SshConfigArgs {
    /// The running VM.
    pub name: String,
    /// User to log in as (default: the definition's [ssh] user, else root).
    #[arg(long)]
    pub user: Option<String>,
    /// Seconds to wait for the guest's sshd (0: fail at once when it does not answer).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Print JSON: host, port, user, identity_file, known_hosts_file, strict_host_key_checking.
    #[arg(long)]
    pub json: bool,
}

/// How to reach one VM's sshd.
pub(crate) struct Target {
    pub user: String,
    pub port: u16,
    /// OpenSSH options: vessel's key, its known_hosts, batch mode.
    pub options: Vec<String>,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    /// `yes` when the host keys came from the console, `accept-new` otherwise.
    pub strict: &'static str,
}

pub(crate) fn target(
    state: &StateDir,
    name: &str,
    user: Option<String>,
    timeout: u64,
) -> Result<Target> {
    let vm = state.vm(name)?;
    // The host port may be chosen at start (crate::vm_ports): known while the VM runs.
    let def = crate::vm_ports::current(&vm, vm.definition()?);
    let is_ssh = |f: &net::Forward| f.protocol == net::Protocol::Tcp && f.guest_port == 22;
    let Some(forward) = def.forwards().into_iter().find(is_ssh) else {
        if crate::vm_ports::auto_forwards(&def).iter().any(is_ssh) {
            return Err(crate::exit::usage(format!(
                "VM '{name}' is not running (vessel start {name})"
            )));
        }
        bail!("VM '{name}' forwards no host port to its SSH port 22 (add forward = [\"tcp:127.0.0.1:2222-:22\"] to a nic)");
    };
    let (addr, port) = (forward.listen_addr(), forward.host_port);
    if !addr.is_loopback() && !addr.is_unspecified() {
        bail!("VM '{name}' forwards SSH on {addr}; vessel ssh connects to 127.0.0.1 only");
    }
    let keys = wait_for_sshd(&vm, &def, port, Duration::from_secs(timeout))?;
    let known_hosts = vm.path(KNOWN_HOSTS);
    let strict = if keys.is_empty() {
        "accept-new" // no host keys on the console (no cloud-init): trust on first use
    } else {
        std::fs::write(
            &known_hosts,
            cloudinit::known_hosts_lines("127.0.0.1", port, &keys)?,
        )?;
        "yes"
    };
    let key = cloudinit::ensure_user_key(&crate::image_vm::ssh_key_dir()?)?;
    let user = user
        .or_else(|| def.ssh.user.as_ref().map(|u| u.get_ref().clone()))
        .unwrap_or_else(|| "root".into());
    let options = [
        "-i".into(),
        key.private_key.display().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        format!("StrictHostKeyChecking={strict}"),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
    ];
    Ok(Target {
        user,
        port,
        options: options.to_vec(),
        key: key.private_key.clone(),
        known_hosts,
        strict,
    })
}

/// Wait until the VM's sshd sends its banner on `port` and, for a VM made from an image,
/// cloud-init printed the host keys; returns them (none for other VMs).
fn wait_for_sshd(
    vm: &VmDir,
    def: &VmDefinition,
    port: u16,
    timeout: Duration,
) -> Result<Vec<cloudinit::HostKey>> {
    let start = Instant::now();
    loop {
        if !matches!(vm.state()?, VmState::Running { .. }) {
            return Err(crate::exit::usage(format!(
                "VM '{}' is not running (vessel start {})",
                vm.name, vm.name
            )));
        }
        let keys = if def.image.is_some() {
            let console = std::fs::read(vm.path(state::SERIAL_LOG)).unwrap_or_default();
            cloudinit::parse_console_host_keys(&String::from_utf8_lossy(&console))
        } else {
            Vec::new()
        };
        if (def.image.is_none() || !keys.is_empty()) && sshd_answers(port) {
            return Ok(keys);
        }
        if start.elapsed() > timeout {
            let what = if def.image.is_some() && keys.is_empty() {
                "printed no SSH host keys on its console"
            } else {
                "has no sshd answering"
            };
            bail!(
                "VM '{}' {what} after {} s (port 127.0.0.1:{port}; see `vessel console {}` or its serial.log; --timeout waits longer)",
                vm.name,
                timeout.as_secs(),
                vm.name
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether an SSH server's identification string ("SSH-2.0-…") arrives on `port`.
fn sshd_answers(port: u16) -> bool {
    use std::io::Read;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"SSH-"
}

/// Wait until the VM's sshd answers on its forwarded port (and, for an image VM, its host
/// keys are on the console): what `vessel up` waits for.
pub fn wait_until_reachable(state: &StateDir, name: &str, timeout: u64) -> Result<()> {
    target(state, name, None, timeout).map(|_| ())
}

pub fn ssh(state: &StateDir, args: SshArgs) -> Result<i32> {
    let t = target(state, &args.name, args.user, args.timeout)?;
    let err = Command::new("ssh")
        .args(&t.options)
        .args(["-p", &t.port.to_string()])
        .arg(format!("{}@127.0.0.1", t.user))
        .args(&args.command)
        .exec();
    Err(anyhow!("cannot run ssh: {err}"))
}

/// `vessel ssh-config`: an OpenSSH `Host` block (or JSON) for the VM, as `vagrant ssh-config`
/// prints, so `ssh -F FILE NAME`, editors and other tools reach it as `vessel ssh` does.
pub fn ssh_config(state: &StateDir, args: SshConfigArgs) -> Result<i32> {
    let t = target(state, &args.name, args.user, args.timeout)?;
    if args.json {
        let v = serde_json::json!({
            "host": "127.0.0.1",
            "port": t.port,
            "user": t.user,
            "identity_file": t.key.display().to_string(),
            "known_hosts_file": t.known_hosts.display().to_string(),
            "strict_host_key_checking": t.strict,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "Host {}\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking {}\n  LogLevel ERROR",
            args.name,
            t.port,
            t.user,
            t.key.display(),
            t.known_hosts.display(),
            t.strict
        );
    }
    Ok(0)
}

/// `NAME:PATH` → (NAME, PATH); a host path otherwise (one with a '/' before any ':').
fn split_remote(s: &str) -> Option<(&str, &str)> {
    let (name, path) = s.split_once(':')?;
    (!name.is_empty() && !name.contains('/')).then_some((name, path))
}

pub fn cp(state: &StateDir, args: CpArgs) -> Result<i32> {
    let (name, src, dst) = match (split_remote(&args.src), split_remote(&args.dst)) {
        (Some((n, p)), None) => (n, Err(p), Ok(PathBuf::from(&args.dst))),
        (None, Some((n, p))) => (n, Ok(PathBuf::from(&args.src)), Err(p)),
        _ => bail!(
            "vessel cp copies between the host and one VM: give NAME:PATH on exactly one side"
        ),
    };
    let t = target(state, name, args.user, args.timeout)?;
    let side = |s: Result<PathBuf, &str>| match s {
        Ok(host) => host.display().to_string(),
        Err(guest) => format!("{}@127.0.0.1:{guest}", t.user),
    };
    let err = Command::new("scp")
        .args(&t.options)
        .args(["-r", "-P", &t.port.to_string()])
        .arg(side(src))
        .arg(side(dst))
        .exec();
    Err(anyhow!("cannot run scp: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_are_name_colon_path() {
        assert_eq!(split_remote("web:/srv/site"), Some(("web", "/srv/site")));
        assert_eq!(split_remote("./site"), None);
        assert_eq!(split_remote("/tmp/a:b"), None);
        assert_eq!(split_remote(":x"), None);
    }
}
