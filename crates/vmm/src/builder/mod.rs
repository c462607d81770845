//! Building a VM, in the spirit of Firecracker's builder: two entry points, one for a VM
//! that boots a kernel ([`build_for_boot`]) and one for a VM rebuilt from saved state — a
//! snapshot's memory file or RAM a migration stream filled ([`build_from_state`]) — over
//! the same steps:
//!
//! 1. the host side of the serial console, `/dev/kvm` and its capabilities;
//! 2. the devices' host side ([`DeviceManager::open`]), before confinement;
//! 3. the KVM VM, its RAM (fresh, mapped from the memory file, or received) as slots;
//! 4. boot only: ACPI/MP tables and the kernel, which decide the entry and the PIT;
//! 5. the PIT, the devices wired to the VM (restore: each from its state);
//! 6. the vCPUs (restore: then the VM's and the vCPUs' KVM state);
//! 7. the [`Vm`] with its control handle and what a snapshot of it reads.

mod boot;
pub(crate) mod boot_files;
mod kvm;
mod serial_output;
mod vcpus;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use kvm_ioctls::{Kvm, VmFd};

use arch::cpu_state::EntryMode;
use arch::memory_map::RamLayout;
use arch::GuestMemory;
use devices::VmExit;

use crate::config::{HostResources, VmConfig};
use crate::device_manager::{AttachArgs, DeviceManager, PendingDevices};
use crate::error::{io_err, VmError};
use crate::snapshot::{restored_config, with_nic_macs, VmSnapshot};
use crate::vm::Vm;

use boot::BootImages;
use serial_output::SerialOutput;
use vcpus::{VcpuArgs, Vcpus};

/// Where a restored VM's RAM comes from.
#[derive(Clone, Copy)]
pub enum RestoreMemory<'a> {
    /// A snapshot's memory file, mapped copy-on-write (or copied; see
    /// [`crate::snapshot::restore_memory`]).
    File(&'a std::path::Path),
    /// RAM already filled (by a migration stream), laid out for the snapshot's machine.
    Filled(&'a GuestMemory),
}

/// The parts every VM is assembled from, whichever entry point built them.
struct Parts {
    kvm: Kvm,
    vm: Arc<VmFd>,
    cfg: VmConfig,
    mem: GuestMemory,
    exit: VmExit,
    devices: DeviceManager,
    vcpus: Vcpus,
    serial_input: crate::event_loop::SerialInput,
    with_pit: bool,
}

/// Steps 1 and 2: the console's host side, KVM, and the devices' host side.
fn open_host_side(
    cfg: &VmConfig,
    saved: Option<&crate::snapshot::DeviceStates>,
) -> Result<(SerialOutput, Kvm, PendingDevices), VmError> {
    let serial = SerialOutput::open(&cfg.host.serial)?;
    let kvm = kvm::open_kvm(cfg.machine.cpus)?;
    let devices = DeviceManager::open(cfg, saved)?;
    Ok((serial, kvm, devices))
}

/// A VM that boots `cfg`'s kernel.
pub fn build_for_boot(cfg: &VmConfig) -> Result<Vm, VmError> {
    // Each NIC's MAC is chosen once: the device and the snapshot's record share it.
    let cfg = with_nic_macs(cfg);
    cfg.validate()?;
    let images = BootImages::read(&cfg)?;
    let machine = prepare(cfg, None, fresh_memory)?;
    let boot = images.load(&machine.cfg, &machine.mem, &machine.layout)?;
    let start = Start::Boot {
        entry: boot.entry,
        with_pit: boot.with_pit,
    };
    finish(machine, start)
}

/// The VM `snapshot` was taken of, with `memory` as its RAM, ready to run from where it
/// was. `host` gives the host side (serial console, emulator, disks granted external
/// backing files); the machine's shape comes from the snapshot, which must already be
/// validated.
pub fn build_from_state(
    host: &HostResources,
    snapshot: &VmSnapshot,
    memory: RestoreMemory<'_>,
) -> Result<Vm, VmError> {
    snapshot.check_disk_files()?;
    let cfg = restored_config(host, &snapshot.machine)?;
    cfg.validate()?;
    let machine = prepare(cfg, Some(&snapshot.devices), |cfg, layout| match memory {
        // Laid out by the receiver from the same machine (`RamLayout` of its size).
        RestoreMemory::Filled(mem) => Ok(mem.clone()),
        // virtiofsd maps the RAM of a VM with shares: a shared memfd, the file copied in.
        RestoreMemory::File(path) if !cfg.machine.shares.is_empty() => Ok(
            crate::snapshot::restore_shared_memory(&ranges(layout), path)?,
        ),
        RestoreMemory::File(path) => Ok(crate::snapshot::restore_memory(&ranges(layout), path)?.0),
    })?;
    finish(machine, Start::Restore(snapshot))
}

/// Steps 1 to 3, shared: the host side, the KVM VM, and its RAM from `memory` registered.
fn prepare(
    cfg: VmConfig,
    saved: Option<&crate::snapshot::DeviceStates>,
    memory: impl FnOnce(&VmConfig, &RamLayout) -> Result<GuestMemory, VmError>,
) -> Result<Machine, VmError> {
    let layout = RamLayout::new(cfg.machine.memory)?;
    let (serial, kvm, pending) = open_host_side(&cfg, saved)?;
    let vm = kvm::create_vm(&kvm)?;
    let mem = memory(&cfg, &layout)?;
    kvm::register_memory(&vm, &mem)?;
    Ok(Machine {
        kvm,
        vm,
        cfg,
        layout,
        mem,
        serial,
        pending,
    })
}

/// What both entry points have after step 3: KVM with the VM and its RAM, the console's
/// and the devices' host side.
struct Machine {
    kvm: Kvm,
    vm: Arc<VmFd>,
    cfg: VmConfig,
    layout: RamLayout,
    mem: GuestMemory,
    serial: SerialOutput,
    pending: PendingDevices,
}

/// How the vCPUs start: at the boot protocol's entry, or from a snapshot's states.
enum Start<'a> {
    Boot { entry: EntryMode, with_pit: bool },
    Restore(&'a VmSnapshot),
}

/// Steps 5 to 7, shared: the PIT, the devices wired to the VM, the vCPUs, the [`Vm`].
fn finish(m: Machine, start: Start<'_>) -> Result<Vm, VmError> {
    let (with_pit, saved) = match start {
        Start::Boot { with_pit, .. } => (with_pit, None),
        Start::Restore(snapshot) => (snapshot.machine.pit, Some(snapshot)),
    };
    kvm::create_pit(&m.vm, with_pit)?;
    let exit = VmExit::new().map_err(io_err("eventfd"))?;
    let devices = m.pending.attach(
        AttachArgs {
            vm: &m.vm,
            mem: &m.mem,
            layout: &m.layout,
            exit: &exit,
            serial_out: m.serial.out,
            with_pit,
        },
        saved.map(|s| &s.devices),
    )?;
    let entry = match start {
        Start::Boot { entry, .. } => Some(entry),
        Start::Restore(_) => None,
    };
    let vcpus = Vcpus::create(
        VcpuArgs {
            kvm: &m.kvm,
            vm: &m.vm,
            cfg: &m.cfg,
            mem: &m.mem,
            devices: &devices,
            exit: &exit,
        },
        entry,
    )?;
    if let Some(snapshot) = saved {
        vcpus.restore(&m.vm, snapshot)?;
    }
    Ok(assemble(Parts {
        kvm: m.kvm,
        vm: m.vm,
        mem: m.mem,
        exit,
        devices,
        vcpus,
        serial_input: m.serial.input,
        with_pit,
        cfg: m.cfg,
    }))
}

/// Guest RAM regions of `layout`, as vm-memory takes them.
fn ranges(layout: &RamLayout) -> Vec<(vm_memory::GuestAddress, usize)> {
    layout
        .ranges
        .iter()
        .map(|&(a, s)| (vm_memory::GuestAddress(a), s as usize))
        .collect()
}

/// Zeroed RAM for a booting VM: private anonymous memory, or a shared memfd when
/// virtiofsd has to map it too.
fn fresh_memory(cfg: &VmConfig, layout: &RamLayout) -> Result<GuestMemory, VmError> {
    let ranges = ranges(layout);
    if cfg.machine.shares.is_empty() {
        GuestMemory::from_ranges(&ranges).map_err(|source| VmError::GuestMemory {
            size: cfg.machine.memory,
            source,
        })
    } else {
        Ok(crate::shared_memory::shared_guest_memory(&ranges)?)
    }
}

/// Step 7: the VM, its control handle and its snapshot source.
fn assemble(parts: Parts) -> Vm {
    let Parts {
        kvm,
        vm,
        cfg,
        mem,
        exit,
        devices,
        vcpus,
        serial_input,
        with_pit,
    } = parts;
    let snapshot_source = crate::snapshot::SnapshotSource {
        page_map: crate::page_map::PageMap::open(),
        vm: vm.clone(),
        mem: mem.clone(),
        devices: devices.device_set(),
        machine: crate::snapshot::machine_state(&cfg, with_pit),
        xsave2_size: vcpus.xsave2_size,
        unsupported_device: devices.shares.unsupported(),
    };
    let handle = crate::control::VmHandle {
        exit: exit.clone(),
        i8042: devices.legacy.i8042.clone(),
        power_button: devices.legacy.power_button.clone(),
        gate: vcpus.gate.clone(),
        vcpu_threads: Arc::new(Mutex::new(Vec::new())),
        snapshot: Arc::new(snapshot_source),
        devices: devices.controls.clone(),
        balloon: devices.balloon.clone(),
        migration: Arc::default(),
    };
    Vm {
        _kvm: kvm,
        _vm: vm,
        _mem: mem,
        cfg,
        devices,
        exit,
        serial_input: Some(serial_input),
        runners: vcpus.runners,
        stop: vcpus.stop,
        handle,
        on_started: None,
        handle_taken: AtomicBool::new(false),
    }
}
