//! `vessel run --jail DIR`: the jail options, and the VM's configuration turned into what
//! the `jail` crate builds (its files, devices, namespaces, cgroup, user).

use std::path::PathBuf;

use clap::Args;
use jail::{Device, Jail, JailFile};
use vmm::{SerialMode, VmConfig};

use crate::run_cli::{error_chain, EXIT_HOST_ERROR, EXIT_USAGE};

#[derive(Debug, Args)]
pub struct JailArgs {
    /// Run the VMM jailed, like Firecracker's jailer: new mount and PID namespaces, `/` is
    /// DIR/root holding only the VM's files (docs/jail.md). DIR: an absolute path to an
    /// existing empty directory (or one vessel jailed a VM in before). Needs root.
    #[arg(long = "jail", id = "jail", value_name = "DIR", value_parser = parse_jail_dir)]
    pub dir: Option<PathBuf>,
    /// With --jail: a cgroup v2 limit KEY=VALUE for the VMM (repeatable): cpu.max,
    /// cpu.weight, memory.max, memory.high, memory.swap.max, io.max, io.weight, pids.max.
    /// The cgroup is <cgroup2 mount>/vessel/<name of DIR>, removed when the VM ends.
    #[arg(long = "jail-cgroup", value_name = "KEY=VALUE", requires = "jail", value_parser = parse_cgroup)]
    pub cgroup: Vec<jail::Setting>,
    /// With --jail: the user id the VMM switches to once the jail is built (with --gid).
    #[arg(long, requires_all = ["jail", "gid"])]
    pub uid: Option<u32>,
    /// With --jail: the group id the VMM switches to once the jail is built (with --uid).
    #[arg(long, requires_all = ["jail", "uid"])]
    pub gid: Option<u32>,
}

fn parse_jail_dir(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    if !p.is_absolute() {
        return Err(format!("jail directory '{s}' must be an absolute path"));
    }
    Ok(p)
}

fn parse_cgroup(s: &str) -> Result<jail::Setting, String> {
    jail::parse_setting(s).map_err(|e| e.to_string())
}

/// Run the VM `cfg` describes inside the jail `args` asks for; the exit status.
pub fn run(args: &JailArgs, cfg: VmConfig) -> i32 {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("vessel: error: --jail needs root (mount and PID namespaces, pivot_root)");
        return EXIT_USAGE;
    }
    let (jail, cfg) = match describe(args, cfg) {
        Ok(x) => x,
        Err(msg) => {
            eprintln!("vessel: error: {msg}");
            return EXIT_USAGE;
        }
    };
    let failed = |e: &jail::JailError| {
        eprintln!("vessel: error: {}", error_chain(e));
        exit_for(e)
    };
    match jail::run(&jail, || crate::run_cli::boot(&cfg, &[]), failed) {
        Ok(ended) => {
            if let Some(e) = ended.cleanup {
                eprintln!("vessel: warning: {e}");
            }
            ended.status
        }
        Err(e) => {
            eprintln!("vessel: error: {}", error_chain(&e));
            exit_for(&e)
        }
    }
}

fn exit_for(e: &jail::JailError) -> i32 {
    if e.is_input() {
        EXIT_USAGE
    } else {
        EXIT_HOST_ERROR
    }
}

/// The jail for `cfg`, and `cfg` with every input path absolute (the VMM opens the same
/// strings inside the jail, where vessel bind-mounts each file at its own path).
fn describe(args: &JailArgs, mut cfg: VmConfig) -> Result<(Jail, VmConfig), String> {
    let abs = |p: &PathBuf| jail::absolute(p).map_err(|e| e.to_string());
    let mut files = Vec::new();
    if let Some(boot) = &mut cfg.boot {
        boot.kernel = abs(&boot.kernel)?;
        files.push(JailFile {
            path: boot.kernel.clone(),
            writable: false,
        });
        if let Some(initrd) = &boot.initrd {
            let initrd = abs(initrd)?;
            files.push(JailFile {
                path: initrd.clone(),
                writable: false,
            });
            boot.initrd = Some(initrd);
        }
    }
    for d in &mut cfg.machine.disks {
        d.path = abs(&d.path)?;
        files.extend(
            jail::disk_files(&d.path, d.format, d.read_only, d.allow_external_backing)
                .map_err(|e| error_chain(&e))?,
        );
    }
    let mut devices = vec![Device::Kvm];
    for nic in &cfg.machine.nics {
        match nic.mode {
            net::NicMode::Tap(_) => {
                if !devices.contains(&Device::Tun) {
                    devices.push(Device::Tun);
                }
            }
            ref other => {
                return Err(format!(
                    "--nic {other:?} cannot be used with --jail: only tap:NAME NICs work in a \
                     jail (the others need helpers or sockets outside it; docs/jail.md)"
                ))
            }
        }
    }
    for (what, path) in [
        (
            "--serial file:",
            match &cfg.host.serial {
                SerialMode::File(p) => Some(p),
                _ => None,
            },
        ),
        ("--console2 file:", cfg.machine.console2.as_ref()),
    ] {
        if path.is_some_and(|p| !p.is_absolute()) {
            return Err(format!(
                "{what}PATH must be absolute with --jail: it is a path inside the jail \
                 (DIR/root/PATH on the host)"
            ));
        }
    }
    let jail = Jail {
        dir: args.dir.clone().unwrap_or_default(),
        files: jail::merge(files),
        new_net: cfg.machine.nics.is_empty(),
        devices,
        ids: args.uid.zip(args.gid),
        cgroup: args.cgroup.clone(),
    };
    Ok((jail, cfg))
}
