//! `vessel start NAME --incoming URL`: the VMM of a VM defined here waits for a live
//! migration of that VM from another vessel (`vessel migrate NAME --to URL` there) instead
//! of booting it, and runs it as this host's VM from then on. The definition gives the host
//! side, as for a resume: the disks (shared storage: the paths the definition names), each
//! NIC's mode, resources and forwards, the serial console. A definition that is not the
//! arriving VM's shape (memory, vCPUs, disks, NICs) is refused, and the sender keeps its VM.

use std::fs::File;
use std::io::BufReader;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use vmm::migration::{self, Listener, MigrationUrl, Received, Storage};

use crate::run_cli::error_chain;
use crate::state::{self, StateDir, VmDir, VmState};

/// In a VM's directory while its VMM waits for the migration: the URL it listens on.
pub const INCOMING_FILE: &str = "incoming";

/// How a VM's VMM waits for its migration.
pub struct Incoming {
    /// unix:PATH or tcp:HOST:PORT.
    pub url: String,
    /// The sender streams the disks; they are written into the definition's images.
    pub copy_storage: bool,
}

/// `vessel start NAME --incoming URL`: starts the VM's VMM listening; returns once it does.
pub fn start(state: &StateDir, name: &str, incoming: &Incoming, json: bool) -> Result<()> {
    let vm = state.vm(name)?;
    let url: MigrationUrl = incoming
        .url
        .parse()
        .map_err(|e: migration::MigrationError| crate::exit::usage(e.to_string()))?;
    crate::suspend_cli::refuse_if_suspended(&vm, "waiting for a migration of it")?;
    let checked = Incoming {
        url: url.to_string(),
        copy_storage: incoming.copy_storage,
    };
    let pid = crate::manage_cli::spawn_vmm(state, name, Some(&checked))?;
    if !json {
        println!("VM '{name}' waits for a migration on {url} (pid {pid})");
    }
    Ok(())
}

/// The VMM's side: listens on `url`, tells `vessel start` (through `ready`) that it waits,
/// takes one migration and builds its VM as `defined` says. Control signals are blocked
/// once the stream is in, before any thread starts. Returns the VM, its configuration and
/// the stream the hand-over finishes on.
pub fn receive(
    vm: &VmDir,
    incoming: &Incoming,
    defined: vmm::VmConfig,
    ready: &mut Option<File>,
) -> Result<(vmm::Vm, vmm::VmConfig, Option<migration::Stream>)> {
    let url: MigrationUrl = incoming
        .url
        .parse()
        .map_err(|e: migration::MigrationError| anyhow!("{e}"))?;
    let listener = Listener::bind(&url).map_err(|e| anyhow!("{}", error_chain(&e)))?;
    std::fs::write(vm.path(INCOMING_FILE), format!("{url}\n"))?;
    let _ = std::fs::remove_file(vm.path(state::EXIT_FILE));
    std::fs::write(
        vm.path(state::PID_FILE),
        format!("{}\n", std::process::id()),
    )?;
    crate::manage_cli::report(ready, "ready");
    let stream = listener
        .accept()
        .with_context(|| format!("accepting the migration on {url}"))?;
    drop(listener);
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    let received = if incoming.copy_storage {
        let mut open = |machine: &vmm::snapshot::MachineState| copy_targets(machine, &defined);
        migration::receive(&mut reader, u64::MAX, Storage::Copied(&mut open))
    } else {
        migration::receive(&mut reader, u64::MAX, Storage::Shared)
    };
    let mut stream = reader.into_inner();
    crate::api_mode::block_control_signals();
    match build(received, defined) {
        Ok((machine, cfg)) => Ok((machine, cfg, Some(stream))),
        Err(e) => {
            migration::refuse(&mut stream, &format!("{e:#}"));
            Err(e)
        }
    }
}

/// `--copy-storage`: the definition's disk images, opened for writing, once the arriving
/// machine is known to have as many disks (the shape is checked in full when it arrives).
fn copy_targets(
    machine: &vmm::snapshot::MachineState,
    defined: &vmm::VmConfig,
) -> std::result::Result<Vec<Box<dyn block::DiskImage>>, String> {
    if machine.disks.len() != defined.machine.disks.len() {
        return Err(format!(
            "the arriving VM has {} disks, its definition here {}",
            machine.disks.len(),
            defined.machine.disks.len()
        ));
    }
    defined
        .machine
        .disks
        .iter()
        .map(|disk| {
            let opts = block::OpenOptions {
                read_only: false,
                format: disk.format,
                allow_external_backing: disk.allow_external_backing,
            };
            block::open(&disk.path, &opts).map_err(|e| {
                format!(
                    "cannot open {} to write the arriving disk into: {e}",
                    disk.path.display()
                )
            })
        })
        .collect()
}

/// The arriving VM rebuilt with the definition's host side.
fn build(
    received: Result<Received, migration::MigrationError>,
    defined: vmm::VmConfig,
) -> Result<(vmm::Vm, vmm::VmConfig)> {
    let mut received = received.map_err(|e| anyhow!("receiving the VM: {}", error_chain(&e)))?;
    let machine = &mut received.snapshot.machine;
    same_shape(machine, &defined)?;
    for (disk, def) in machine.disks.iter_mut().zip(&defined.machine.disks) {
        disk.path = def.path.clone();
    }
    let host = crate::suspend_cli::adopt(machine, defined)?;
    let vm =
        vmm::Vm::restore_received(&host, &received).map_err(|e| anyhow!("{}", error_chain(&e)))?;
    let cfg = vm.config().clone();
    Ok((vm, cfg))
}

/// Refuses a definition that does not describe the arriving machine.
fn same_shape(machine: &vmm::snapshot::MachineState, defined: &vmm::VmConfig) -> Result<()> {
    if machine.memory != defined.machine.memory {
        bail!(
            "the arriving VM has {} MiB of memory, its definition here {} MiB",
            machine.memory >> 20,
            defined.machine.memory >> 20
        );
    }
    if machine.cpus != defined.machine.cpus {
        bail!(
            "the arriving VM has {} vCPUs, its definition here {}",
            machine.cpus,
            defined.machine.cpus
        );
    }
    if machine.disks.len() != defined.machine.disks.len() {
        bail!(
            "the arriving VM has {} disks, its definition here {}",
            machine.disks.len(),
            defined.machine.disks.len()
        );
    }
    for (index, (disk, def)) in machine.disks.iter().zip(&defined.machine.disks).enumerate() {
        if disk.read_only != def.read_only {
            bail!("disk {index} is read-only on one side only");
        }
        let arriving = disk.format.as_deref();
        let here = def.format.map(|f| f.to_string());
        if let (Some(a), Some(h)) = (arriving, here.as_deref()) {
            if a != h {
                bail!("disk {index} is {a} in the arriving VM but {h} here");
            }
        }
    }
    Ok(())
}

/// After confinement: tells the sender the VM is ready here and waits for its go; the
/// sender hears that the VM runs once the vCPUs started. The VM is this host's from then
/// on (the `incoming` marker goes).
pub fn hand_over(vm: &VmDir, mut stream: migration::Stream, machine: &mut vmm::Vm) -> Result<()> {
    migration::ready_and_wait_go(&mut stream)
        .map_err(|e| anyhow!("the sender did not hand the VM over: {}", error_chain(&e)))?;
    machine.on_started(Box::new(move || {
        if let Err(e) = migration::confirm_resumed(&mut stream) {
            tracing::warn!("telling the sender the VM runs here: {e}");
        }
    }));
    std::fs::remove_file(vm.path(INCOMING_FILE)).context("removing the incoming marker")?;
    eprintln!("vessel: migration received; VM '{}' runs here now", vm.name);
    Ok(())
}

/// Records why the wait or the hand-over failed (`ls` shows it as the last exit).
pub fn failed(vm: &VmDir, e: &anyhow::Error) {
    let _ = std::fs::remove_file(vm.path(INCOMING_FILE));
    let _ = std::fs::write(
        vm.path(state::EXIT_FILE),
        format!("incoming migration failed: {e:#}\n"),
    );
}

/// `vessel stop` of a VM whose VMM waits for a migration: the VMM is killed (nothing runs
/// in it yet; a sender mid-way keeps its VM).
pub fn stop_waiting(vm: &VmDir) -> Result<()> {
    if let Some(pid) = vm.state()?.vmm_pid().filter(|&p| p > 0) {
        // SAFETY: sending a signal to the VMM process that holds this VM's lock.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    state::wait_for_exit(vm, Duration::from_secs(10))?;
    if matches!(vm.state()?, VmState::Incoming { .. }) {
        bail!("the VMM of VM '{}' did not exit", vm.name);
    }
    let _ = std::fs::remove_file(vm.path(INCOMING_FILE));
    std::fs::write(
        vm.path(state::EXIT_FILE),
        "stopped while waiting for a migration\n",
    )?;
    Ok(())
}
