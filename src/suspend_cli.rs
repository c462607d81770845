//! `vessel suspend NAME` and `vessel resume NAME` (Vagrant's suspend/resume, VirtualBox's
//! saved state): a running background VM's whole state — memory, vCPUs, devices — is saved
//! in its directory and its VMM exits; `resume` (or `start`, or `up`) brings it back from
//! there, its memory mapped lazily from the saved file.
//!
//! The saved state is a VM snapshot (docs/snapshots.md) in `suspended/`, written first to
//! `suspended.partial/` and renamed when complete, so a half-written state is never taken
//! for one. A suspended VM's definition and disks must not change: `set`, disk snapshots,
//! export and clone refuse it. It is deleted once the VM runs from it (the disks move on
//! from then), or by `vessel stop`, which turns a suspended VM into a stopped one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::api_client::{api_call, api_call_waiting, fault};
use crate::exit::usage;
use crate::state::{self, StateDir, VmDir, VmState};

/// The saved state of a suspended VM, in its directory.
pub const SUSPENDED_DIR: &str = "suspended";
pub const PARTIAL_DIR: &str = "suspended.partial";
pub const STATE_FILE: &str = "state.json";
const MEMORY_FILE: &str = "memory";

/// The files of a VM's saved state.
pub struct SavedState {
    pub state: PathBuf,
    pub memory: PathBuf,
}

/// The saved state of `vm`, when it is suspended.
pub fn saved_state(vm: &VmDir) -> Option<SavedState> {
    let dir = vm.path(SUSPENDED_DIR);
    dir.is_dir().then(|| SavedState {
        state: dir.join(STATE_FILE),
        memory: dir.join(MEMORY_FILE),
    })
}

/// Refuses to change a suspended VM (`what` says what was asked).
pub fn refuse_if_suspended(vm: &VmDir, what: &str) -> Result<()> {
    if saved_state(vm).is_some() {
        return Err(usage(format!(
            "VM '{0}' is suspended: {what} would not match its saved state; `vessel resume {0}` \
             first, or `vessel stop {0}` to discard the saved state",
            vm.name
        )));
    }
    Ok(())
}

/// Deletes the saved state (a resumed VM runs from its own copy of the memory mapping).
pub fn discard(vm: &VmDir) -> Result<()> {
    let dir = vm.path(SUSPENDED_DIR);
    std::fs::remove_dir_all(&dir)
        .with_context(|| format!("cannot delete the saved state {}", dir.display()))
}

/// `vessel suspend NAME`: pause, save, stop the VMM. Anything failing before the state is
/// complete resumes the VM where it was.
pub fn suspend(state: &StateDir, name: &str, json: bool) -> Result<i32> {
    let vm = state.vm(name)?;
    vm.definition()?;
    if !matches!(vm.state()?, VmState::Running { .. }) {
        return Err(usage(format!("VM '{name}' is not running")));
    }
    let socket = vm.path(state::API_SOCKET);
    let partial = vm.path(PARTIAL_DIR);
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let started = Instant::now();
    if let Err(e) = save(&socket, &partial) {
        let _ = std::fs::remove_dir_all(&partial);
        let resumed = api_call(&socket, "PATCH", "/vm", Some(&json!({"state": "Resumed"})));
        let note = match resumed {
            Ok((204, _)) => "it keeps running",
            _ => "and it could not be resumed: see `vessel inspect`",
        };
        bail!("cannot suspend VM '{name}': {e:#}; {note}");
    }
    let saved_in = started.elapsed();
    std::fs::rename(&partial, vm.path(SUSPENDED_DIR)).context("cannot commit the saved state")?;
    stop_vmm(&vm)?;
    std::fs::write(vm.path(state::EXIT_FILE), "suspended\n")?;
    let memory = std::fs::metadata(vm.path(SUSPENDED_DIR).join(MEMORY_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    if !json {
        println!(
            "suspended VM '{name}' in {} ms ({} MiB of memory saved)",
            saved_in.as_millis(),
            memory >> 20
        );
    }
    Ok(0)
}

/// Pauses the VM and writes its snapshot into `dir`.
fn save(socket: &Path, dir: &Path) -> Result<()> {
    set_paused(socket, true)?;
    save_paused(socket, dir)
}

/// Pauses or resumes the VM behind `socket`.
pub fn set_paused(socket: &Path, paused: bool) -> Result<()> {
    let state = if paused { "Paused" } else { "Resumed" };
    let (status, reply) = api_call(socket, "PATCH", "/vm", Some(&json!({ "state": state })))?;
    if status != 204 {
        bail!("{}: {}", state.to_lowercase(), fault(&reply));
    }
    Ok(())
}

/// Writes the paused VM's snapshot into `dir` (`state.json` and `memory`).
pub fn save_paused(socket: &Path, dir: &Path) -> Result<()> {
    let body = json!({
        "snapshot_type": "Full",
        "snapshot_path": dir.join(STATE_FILE),
        "mem_file_path": dir.join(MEMORY_FILE),
    });
    let (status, reply) = api_call_waiting(
        socket,
        "PUT",
        "/snapshot/create",
        Some(&body),
        Duration::from_secs(3600),
    )?;
    if status != 204 {
        bail!("{}", fault(&reply));
    }
    Ok(())
}

/// Ends the paused VM's VMM (its state is saved): SIGTERM, then SIGKILL.
fn stop_vmm(vm: &VmDir) -> Result<()> {
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        if !crate::manage_cli::signal(vm, sig)? {
            return Ok(());
        }
        if state::wait_for_exit(vm, Duration::from_secs(10))? {
            return Ok(());
        }
    }
    Err(anyhow!("the VMM of VM '{}' did not exit", vm.name))
}

/// `vessel resume NAME`: `vessel start` of a suspended VM, refused for any other.
pub fn resume(state: &StateDir, name: &str, json: bool) -> Result<i32> {
    let vm = state.vm(name)?;
    vm.definition()?;
    match vm.state()? {
        VmState::Suspended => crate::manage_cli::start(state, name, json),
        VmState::Running { .. } => Err(usage(format!("VM '{name}' is running"))),
        _ => Err(usage(format!(
            "VM '{name}' is not suspended (`vessel start {name}` boots it)"
        ))),
    }
}

/// The VMM process's side of a resume: the VM rebuilt from the saved state, with the
/// serial console and emulator setting of `defined` (the VM's definition, which also says
/// which disks may follow backing files elsewhere, as an image VM's overlay does). Returns
/// the VM and its configuration (for the API and confinement). The saved state is deleted
/// once the VM is built.
pub fn restore(
    vm: &VmDir,
    saved: &SavedState,
    defined: vmm::VmConfig,
) -> Result<(vmm::Vm, vmm::VmConfig)> {
    let mut snapshot = vmm::snapshot::read_state_file(&saved.state)
        .map_err(|e| anyhow!("the saved state: {}", crate::run_cli::error_chain(&e)))?;
    let host = adopt(&mut snapshot.machine, defined)?;
    let machine = vmm::Vm::restore(&host, &snapshot, &saved.memory)
        .map_err(|e| anyhow!("{}", crate::run_cli::error_chain(&e)))?;
    let cfg = machine.config().clone();
    discard(vm)?;
    Ok((machine, cfg))
}

/// The host resources to rebuild a saved (or arriving) `machine` as the VM `defined`
/// describes: serial console and emulator setting from the definition, each NIC's host
/// side from it (the guest's MAC stays), the vsock's socket path and the second console's
/// log file, the disks it lets follow backing files elsewhere, and the shares' host
/// directories (whose tags must be the saved ones, checked when the VM is rebuilt). A
/// definition whose NICs, vsock CID or consoles are not the machine's is refused.
pub fn adopt(
    machine: &mut vmm::snapshot::MachineState,
    defined: vmm::VmConfig,
) -> Result<vmm::HostResources> {
    host_nics_from(&mut machine.nics, &defined.machine.nics)?;
    match (&mut machine.vsock, &defined.machine.vsock) {
        (Some(saved), Some(def)) if saved.cid == def.cid => saved.uds = def.uds.clone(),
        (None, None) => {}
        (saved, def) => bail!(
            "the VM has vsock {}, its definition {}",
            vsock_label(saved.as_ref()),
            vsock_label(def.as_ref())
        ),
    }
    match (&mut machine.console, &defined.machine.console2) {
        (Some(saved), Some(def)) => *saved = def.clone(),
        (None, None) => {}
        _ => bail!("the VM and its definition differ in having a second console"),
    }
    Ok(vmm::HostResources {
        backing_grants: defined
            .machine
            .disks
            .iter()
            .filter(|d| d.allow_external_backing)
            .map(|d| d.path.clone())
            .collect(),
        shares: defined.machine.shares,
        ..defined.host
    })
}

fn vsock_label(v: Option<&vmm::VsockConfig>) -> String {
    v.map_or_else(|| "none".to_string(), |v| format!("with CID {}", v.cid))
}

/// The host side of each saved NIC (its mode's resources, its forwards with the ports
/// chosen at this start) from the definition; the guest's side (its MAC) stays as saved.
/// A definition whose NICs are not the saved ones is refused.
fn host_nics_from(saved: &mut [vmm::snapshot::SavedNic], defined: &[net::NicConfig]) -> Result<()> {
    if saved.len() != defined.len() {
        bail!(
            "the definition has {} NICs, the saved state {}",
            defined.len(),
            saved.len()
        );
    }
    for (index, (nic, def)) in saved.iter_mut().zip(defined).enumerate() {
        let host = vmm::snapshot::SavedNic::new(def, nic.mac);
        if host.mode != nic.mode {
            bail!(
                "NIC {index} is {:?} in the definition but {:?} in the saved state",
                host.mode,
                nic.mode
            );
        }
        *nic = host;
    }
    Ok(())
}
