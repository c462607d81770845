//! The project workflow of Vagrant users: `vessel up [NAME]` creates the VM from
//! `./vessel.toml` (or `--from FILE`) when it does not exist, starts it and waits for its
//! sshd; `vessel reload NAME` stops it, applies what changed in that file and starts it
//! again; `vessel global-status` lists the VMs of every state directory vessel made VMs in.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::exit::usage;
use crate::state::{self, StateDir, VmState};
use crate::vmdef::{Disk, VmDefinition};

/// The definition file `up` reads when no `--from` is given.
pub const PROJECT_FILE: &str = "vessel.toml";
/// In a VM's directory: the absolute path of the project file it was made from.
pub const PROJECT_LINK: &str = "project";

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The VM (default: the `name` in the definition file).
    name: Option<String>,
    /// The VM definition file (default: ./vessel.toml); used when the VM does not exist yet.
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,
    /// Do not wait for the guest's sshd once the VM runs (nor provision it).
    #[arg(long)]
    no_wait: bool,
    /// Do not run the [[provision]] entries that never ran.
    #[arg(long)]
    no_provision: bool,
    /// Seconds to wait for the guest's sshd (VMs that forward a host port to port 22).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Print the VM's summary as JSON at the end (the fields of `vessel ls --json`).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The VM to restart with its project file's changes.
    name: String,
    /// The definition file to apply (default: the file `vessel up` made the VM from, if any).
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,
    /// Seconds to wait for the guest to shut down before powering it off.
    #[arg(long, default_value_t = 30)]
    stop_timeout: u64,
    /// Do not wait for the guest's sshd once the VM runs again.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for the guest's sshd.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Print the VM's summary as JSON at the end (the fields of `vessel ls --json`).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct GlobalStatusArgs {
    /// Print a JSON array: `ls --json`'s fields plus `state_dir` and `project`.
    #[arg(long)]
    json: bool,
    /// Forget state directories that no longer exist or hold no VM.
    #[arg(long)]
    prune: bool,
}

/// `vessel up`.
pub fn up(state: &StateDir, args: UpArgs) -> Result<i32> {
    let file = match &args.from {
        Some(f) => Some(f.clone()),
        None => Some(PathBuf::from(PROJECT_FILE)).filter(|f| f.is_file()),
    };
    let name = match (&args.name, &file) {
        (Some(n), _) => n.clone(),
        (None, Some(f)) => name_in(f)?,
        (None, None) => {
            return Err(usage(format!(
                "no ./{PROJECT_FILE} here: give the VM's NAME or --from FILE"
            )))
        }
    };
    let vm = state.vm(&name)?;
    let say = |msg: String| {
        if !args.json {
            println!("{msg}");
        }
    };
    if !vm.exists() {
        let file = file.ok_or_else(|| {
            usage(format!(
                "VM '{name}' does not exist and there is no ./{PROJECT_FILE}: give --from FILE"
            ))
        })?;
        crate::vm_create::create_from_file(state, &name, &file)?;
        remember_project(&vm.path(PROJECT_LINK), &file)?;
        say(format!("created VM '{name}' from {}", file.display()));
    }
    if vm.state()?.vmm_pid().is_some() {
        say(format!("VM '{name}' is already running"));
    } else {
        crate::manage_cli::start(state, &name, true)?;
        say(format!("started VM '{name}'"));
    }
    wait_for_ssh(state, &name, args.no_wait, args.timeout, &say)?;
    if !args.no_wait && !args.no_provision {
        let code = crate::provision_cli::run_pending(state, &name, args.timeout)?;
        if code != 0 {
            return Ok(code);
        }
    }
    finish(args.json, state, &name)
}

/// `vessel reload`.
pub fn reload(state: &StateDir, args: ReloadArgs) -> Result<i32> {
    let name = &args.name;
    let vm = state.vm(name)?;
    let mut def = vm.definition()?;
    let say = |msg: String| {
        if !args.json {
            println!("{msg}");
        }
    };
    let file = match &args.from {
        Some(f) => Some(f.clone()),
        None => std::fs::read_to_string(vm.path(PROJECT_LINK))
            .ok()
            .map(|p| PathBuf::from(p.trim())),
    };
    // Read and check the file before the VM is stopped: a broken file stops nothing.
    let new = match &file {
        Some(f) => Some(crate::vm_create::definition_from_file(f, name)?),
        None => None,
    };
    if let Some(new) = new {
        apply_project(&mut def, new)?;
    }
    let def = crate::vm_create::recheck(&def, &vm)?;
    // A suspended VM's saved state would not match what changes: stop discards it.
    if matches!(
        vm.state()?,
        VmState::Running { .. } | VmState::Incoming { .. } | VmState::Suspended
    ) {
        crate::manage_cli::stop(state, name, false, args.stop_timeout, args.json)?;
    }
    let Some(lock) = vm.try_lock()? else {
        return Err(usage(format!(
            "VM '{name}' is still running after stop; try again"
        )));
    };
    crate::vm_create::create_sized_disks(&def)?;
    crate::snapshot_tree::write_atomic(
        &vm.path(state::DEFINITION),
        toml::to_string_pretty(&def)?.as_bytes(),
    )?;
    if let (Some(f), Some(_)) = (&file, &args.from) {
        remember_project(&vm.path(PROJECT_LINK), f)?;
    }
    drop(lock);
    crate::manage_cli::start(state, name, true)?;
    match &file {
        Some(f) => say(format!("restarted VM '{name}' with {}", f.display())),
        None => say(format!("restarted VM '{name}'")),
    }
    wait_for_ssh(state, name, args.no_wait, args.timeout, &say)?;
    finish(args.json, state, name)
}

/// `vessel global-status`.
pub fn global_status(args: GlobalStatusArgs) -> Result<i32> {
    let index = index_path()?;
    let mut rows = Vec::new();
    let mut kept = Vec::new();
    for dir in read_index(&index) {
        let Ok(state) = StateDir::open_existing(&dir) else {
            continue;
        };
        let names = state.list().unwrap_or_default();
        if names.is_empty() && args.prune {
            continue;
        }
        kept.push(dir.clone());
        for name in names {
            let Ok(vm) = state.vm(&name) else { continue };
            let mut row = crate::vm_list::summary(&vm);
            row["state_dir"] = json!(dir.display().to_string());
            let project = std::fs::read_to_string(vm.path(PROJECT_LINK)).ok();
            row["project"] = json!(project.map(|p| p.trim().to_string()));
            rows.push(row);
        }
    }
    if args.prune {
        write_index(&index, &kept)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    Ok(0)
}

fn print_table(rows: &[Value]) {
    println!("{:<20} {:<10} {:<40} PROJECT", "NAME", "STATE", "STATE DIR");
    for r in rows {
        let text = |k: &str| r[k].as_str().unwrap_or("-").to_string();
        println!(
            "{:<20} {:<10} {:<40} {}",
            text("name"),
            text("state"),
            text("state_dir"),
            text("project")
        );
    }
    if rows.is_empty() {
        println!("(no VMs: state directories are recorded when a VM is created in them)");
    }
}

/// Record a state directory in which a VM was just made, for `global-status`.
pub fn register_state_dir(state: &StateDir) -> Result<()> {
    let index = index_path()?;
    let root = std::fs::canonicalize(&state.root).unwrap_or(state.root.clone());
    let mut dirs = read_index(&index);
    if dirs.contains(&root) {
        return Ok(());
    }
    dirs.push(root);
    write_index(&index, &dirs)
}

/// `$XDG_DATA_HOME/vessel/state-dirs`: one absolute path per line.
fn index_path() -> Result<PathBuf> {
    let data = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(
            std::env::var_os("HOME").context("neither XDG_DATA_HOME nor HOME is set")?,
        )
        .join(".local/share"),
    };
    Ok(data.join("vessel").join("state-dirs"))
}

fn read_index(index: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(index)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

fn write_index(index: &Path, dirs: &[PathBuf]) -> Result<()> {
    if let Some(parent) = index.parent() {
        state::ensure_dir(parent)?;
    }
    let text: String = dirs.iter().map(|d| format!("{}\n", d.display())).collect();
    crate::snapshot_tree::write_atomic(index, text.as_bytes())
}

fn remember_project(link: &Path, file: &Path) -> Result<()> {
    let abs = std::fs::canonicalize(file).with_context(|| format!("{}", file.display()))?;
    std::fs::write(link, format!("{}\n", abs.display()))
        .with_context(|| format!("cannot write {}", link.display()))
}

/// The `name` field of a definition file.
fn name_in(file: &Path) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        name: Option<String>,
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let named: Named = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    named.name.ok_or_else(|| {
        usage(format!(
            "{} has no name = \"...\": give the VM's NAME",
            file.display()
        ))
    })
}

/// Wait for sshd when the VM forwards a host port to its port 22 (image VMs always do).
fn wait_for_ssh(
    state: &StateDir,
    name: &str,
    no_wait: bool,
    timeout: u64,
    say: &dyn Fn(String),
) -> Result<()> {
    let def = state.vm(name)?.definition()?;
    if no_wait || !crate::vm_ports::forwards_ssh(&def) {
        return Ok(());
    }
    say(format!("waiting for VM '{name}' to answer on SSH..."));
    crate::ssh_cli::wait_until_reachable(state, name, timeout)?;
    say(format!("VM '{name}' is up: vessel ssh {name}"));
    Ok(())
}

fn finish(json: bool, state: &StateDir, name: &str) -> Result<i32> {
    if json {
        crate::vm_list::print_summary(&state.vm(name)?)?;
    }
    Ok(0)
}

/// Put what a changed project file says into an existing VM's definition. What vessel made
/// for the VM (an image VM's overlay, seed and NAT NIC) stays; a change that would need a
/// new VM (another image, other disks, other user-data) is refused with what to do instead.
pub fn apply_project(cur: &mut VmDefinition, new: VmDefinition) -> Result<()> {
    let image = |d: &VmDefinition| d.image.as_ref().map(|i| i.get_ref().clone());
    if image(cur) != image(&new) {
        return Err(usage(
            "the project file names another image: reload cannot change it (vessel rm, then vessel up)",
        ));
    }
    let user_data = |d: &VmDefinition| d.user_data.as_ref().map(|u| u.get_ref().clone());
    if user_data(cur) != user_data(&new) {
        return Err(usage(
            "the project file changes user_data: cloud-init reads it once (vessel rm, then vessel up)",
        ));
    }
    let from_image = cur.image.is_some();
    let own = own_disks(cur, from_image);
    let paths =
        |ds: &[Disk]| -> Vec<PathBuf> { ds.iter().map(|d| d.path.get_ref().clone()).collect() };
    if paths(own) != paths(&new.disks) {
        return Err(usage(
            "the project file changes the disks: reload keeps them (use vessel set --disk, or vessel rm and vessel up)",
        ));
    }
    cur.cpus = new.cpus;
    cur.memory = new.memory;
    cur.rng = new.rng;
    cur.pit = new.pit;
    cur.console2 = new.console2;
    cur.vsock = new.vsock;
    cur.serial = new.serial;
    cur.groups = new.groups;
    cur.provisions = new.provisions;
    if new.ssh.user.is_some() || !from_image {
        cur.ssh = new.ssh;
    }
    if !from_image {
        cur.boot = new.boot;
    }
    // An image VM whose file names no NIC keeps the NAT NIC vessel gave it (with SSH).
    if !(from_image && new.nics.is_empty()) {
        cur.nics = new.nics;
    }
    Ok(())
}

/// The disks the user's file names: all of them, or for an image VM those between the
/// overlay (first) and the seed (last) that vessel added.
fn own_disks(def: &VmDefinition, from_image: bool) -> &[Disk] {
    if from_image && def.disks.len() >= 2 {
        &def.disks[1..def.disks.len() - 1]
    } else {
        &def.disks
    }
}
