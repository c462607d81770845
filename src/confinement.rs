//! The confinement flags of the VMM (`--seccomp`, `--landlock`, `--user`) and the files a
//! VM keeps using after set-up, from which its landlock rules are made (crates/confine).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use confine::{FsRules, SeccompMode};
use vmm::{SerialMode, VmConfig};

#[derive(Debug, Args, Clone, Default)]
pub struct ConfineArgs {
    /// Per-thread seccomp filters: on (a forbidden system call stops the VMM and names
    /// it), log (allowed but logged by the kernel) or off.
    #[arg(long, default_value = "on", value_parser = parse_seccomp)]
    pub seccomp: SeccompMode,
    /// Landlock: after set-up the VMM may open only the VM's own files (on or off).
    #[arg(long, default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub landlock: bool,
    /// When started as root: become this user (name or uid) once the VM is set up (taps
    /// and bridges are created as root first).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

impl ConfineArgs {
    /// Everything on: what a VM started with `vessel start` gets.
    pub fn default_on() -> Self {
        Self {
            seccomp: SeccompMode::On,
            landlock: true,
            user: None,
        }
    }
}

fn parse_seccomp(s: &str) -> Result<SeccompMode, String> {
    s.parse()
        .map_err(|e: confine::seccomp::SeccompError| e.to_string())
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("invalid value '{s}': expected on or off")),
    }
}

/// Record the process's confinement policy; call before any thread starts.
pub fn set_policy(args: &ConfineArgs) -> Result<()> {
    let user = match &args.user {
        Some(name) => {
            confine::privileges::require_root()?;
            Some(confine::privileges::User::lookup(name)?)
        }
        None => None,
    };
    confine::set_policy(confine::Policy {
        seccomp: args.seccomp,
        landlock: args.landlock,
        user,
    })
    .context("setting up confinement")
}

/// The files and directories `cfg`'s VM may open once it runs, plus `extra_dirs` (a state
/// directory, where exit notes and snapshots are written).
pub fn fs_rules(cfg: &VmConfig, extra_dirs: &[&Path]) -> FsRules {
    let mut rules = FsRules::default();
    if let Some(boot) = &cfg.boot {
        rules.allow_read(&boot.kernel);
        if let Some(initrd) = &boot.initrd {
            rules.allow_read(initrd);
        }
    }
    for d in &cfg.machine.disks {
        if d.read_only {
            rules.allow_read(&d.path);
        } else {
            rules.allow_write(&d.path);
        }
    }
    match &cfg.host.serial {
        SerialMode::File(p) => allow_log(&mut rules, p),
        SerialMode::Background { log, socket } => {
            rules.allow_write(log);
            if let Some(dir) = socket.parent() {
                rules.allow_write(non_empty(dir));
            }
        }
        SerialMode::Stdio | SerialMode::None => {}
    }
    if let Some(p) = &cfg.machine.console2 {
        allow_log(&mut rules, p);
    }
    // vsock: UDS_PATH is removed at the end, UDS_PATH_<port> are connected to.
    if let Some(v) = &cfg.machine.vsock {
        if let Some(dir) = v.uds.parent() {
            rules.allow_write(non_empty(dir));
        }
    }
    for nic in &cfg.machine.nics {
        match &nic.mode {
            net::NicMode::Internal(name) => rules.allow_write(net::switch::switch_dir(name)),
            net::NicMode::NatNetwork(name) => rules.allow_write(net::natnet::natnet_dir(name)),
            _ => {}
        }
    }
    for dir in extra_dirs {
        rules.allow_write(dir);
        // The directory itself may go when the VM ends (the run directory of --image).
        if let Some(parent) = dir.parent() {
            rules.remove_dir.push(non_empty(parent));
        }
    }
    rules
}

/// A console log: a regular file is rotated at its cap (renamed to `PATH.1` in its
/// directory, vmm::console_log), so its directory is writable; anything else (`/dev/null`,
/// a terminal) only the file itself.
fn allow_log(rules: &mut FsRules, path: &Path) {
    match path.parent() {
        Some(dir) if path.is_file() => rules.allow_write(non_empty(dir)),
        _ => rules.allow_write(path),
    }
}

fn non_empty(dir: &Path) -> PathBuf {
    if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_path_buf()
    }
}

/// End of set-up: switch user, landlock, drop privileges (crates/confine).
pub fn lock_down(cfg: &VmConfig, extra_dirs: &[&Path]) -> Result<()> {
    confine::lock_down(&fs_rules(cfg, extra_dirs)).context("confining the VMM")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_refuse_other_values() {
        assert_eq!(parse_seccomp("log"), Ok(SeccompMode::Log));
        assert!(parse_seccomp("maybe").is_err());
        assert_eq!(parse_on_off("off"), Ok(false));
        assert!(parse_on_off("no").is_err());
    }
}
