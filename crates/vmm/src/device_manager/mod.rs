//! The one place that knows a VM's set of devices, grouped by bus: the legacy devices on
//! the port-I/O bus ([`legacy`]) and the PCI platform on port I/O and MMIO ([`pci`]) with
//! the virtio functions ([`virtio_devices`]) and the shares' vhost-user-fs functions.
//!
//! Devices come up in two steps. [`DeviceManager::open`] opens what lives on the host
//! (disk images, NIC backends, console files, the vsock socket, virtiofsd), before the KVM
//! VM exists and before the VMM confines itself; [`PendingDevices::attach`] then wires them
//! to the VM (irqfds, ioeventfds, BARs) once guest memory is registered. Both take a
//! snapshot's [`DeviceStates`] when the VM is rebuilt from saved state, and
//! [`DeviceSet::with_states`] saves them all again.

pub(crate) mod legacy;
pub(crate) mod pci;
pub(crate) mod virtio_devices;

use std::io::Write;
use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;

use arch::memory_map::RamLayout;
use arch::GuestMemory;
use devices::cmos::Cmos;
use devices::i8042::I8042;
use devices::serial::Serial;
use devices::{Bus, Persist, VmExit};

use crate::config::VmConfig;
use crate::device_control::DeviceControls;
use crate::error::VmError;
use crate::shares::ShareDaemons;
use crate::snapshot::DeviceStates;

use legacy::{LegacyArgs, LegacyDevices};
use pci::PciPlatform;
use virtio_devices::VirtioDevices;

/// Every device of a running VM and the buses the vCPUs reach them through.
pub(crate) struct DeviceManager {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub legacy: LegacyDevices,
    pub pci: PciPlatform,
    /// Run-time controls of the disks and NICs (rate limits, forwards).
    pub controls: Arc<DeviceControls>,
    /// The virtio-balloon, when the VM has one.
    pub balloon: Option<crate::BalloonControl>,
    /// The shares' virtiofsd processes, stopped when the VM ends.
    pub shares: ShareDaemons,
}

/// The host side of every device, opened, waiting for the VM to be wired to.
pub(crate) struct PendingDevices {
    virtio: VirtioDevices,
    shares: ShareDaemons,
}

/// The handles of the devices snapshots save, in the order the state file holds them.
#[derive(Clone)]
pub(crate) struct DeviceSet {
    pub serial: Arc<Mutex<Serial>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub cmos: Arc<Mutex<Cmos>>,
    /// The virtio-pci functions, in slot order.
    pub virtio: Vec<Arc<Mutex<virtio::VirtioPciDevice>>>,
}

/// What attaching needs from the VM being built.
pub(crate) struct AttachArgs<'a> {
    pub vm: &'a Arc<VmFd>,
    pub mem: &'a GuestMemory,
    pub layout: &'a RamLayout,
    pub exit: &'a VmExit,
    pub serial_out: Box<dyn Write + Send>,
    pub with_pit: bool,
}

impl DeviceManager {
    /// Opens the host side of the devices `cfg` asks for, in PCI slot order (virtio devices,
    /// then the shares' virtiofsd); with `saved`, each virtio model takes its saved state.
    pub fn open(cfg: &VmConfig, saved: Option<&DeviceStates>) -> Result<PendingDevices, VmError> {
        let saved_virtio = saved.map(|s| s.virtio.as_slice());
        let mut virtio = virtio_devices::virtio_devices(cfg, saved_virtio)?;
        // virtiofsd starts now, before the VMM is confined; restored, it loads its state.
        let saved_shares = saved_virtio.map(|states| (states, virtio.devices.len()));
        let (share_devices, shares) = crate::shares::start(&cfg.machine.shares, saved_shares)?;
        virtio.devices.extend(share_devices);
        Ok(PendingDevices { virtio, shares })
    }

    /// The devices a snapshot saves.
    pub fn device_set(&self) -> DeviceSet {
        DeviceSet {
            serial: self.legacy.serial.clone(),
            i8042: self.legacy.i8042.clone(),
            cmos: self.legacy.cmos.clone(),
            virtio: self.pci.devices.clone(),
        }
    }
}

impl PendingDevices {
    /// Builds the legacy devices and the PCI platform on fresh buses and plugs the opened
    /// devices in; with `saved`, every device takes its saved state and each BAR goes
    /// where the guest had it.
    pub fn attach(
        self,
        args: AttachArgs<'_>,
        saved: Option<&DeviceStates>,
    ) -> Result<DeviceManager, VmError> {
        let pio = Bus::new();
        let legacy = LegacyDevices::attach(
            LegacyArgs {
                vm: args.vm,
                pio: &pio,
                exit: args.exit,
                layout: args.layout,
                serial_out: args.serial_out,
                with_pit: args.with_pit,
            },
            saved,
        )?;
        let mmio = Arc::new(Bus::new());
        let VirtioDevices {
            devices,
            balloon,
            limiters,
        } = self.virtio;
        let saved_virtio = saved.map(|s| s.virtio.as_slice());
        let pci = pci::setup(args.vm, args.mem, &pio, &mmio, devices, saved_virtio)?;
        let balloon = balloon.and_then(|(index, handle)| {
            let processor = pci.processors.get(index)?.clone();
            Some(crate::BalloonControl::new(handle, processor))
        });
        Ok(DeviceManager {
            pio: Arc::new(pio),
            mmio,
            controls: Arc::new(limiters.into_controls(&pci.processors)),
            legacy,
            pci,
            balloon,
            shares: self.shares,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DeviceSet {
    /// Saves the legacy devices, freezes each virtio function's queues in turn (see
    /// `VirtioPciDevice::with_frozen_state`) and, with all of them frozen, calls `f` with
    /// every state: what `f` reads of guest memory matches the device states.
    pub fn with_states<R>(&self, f: &mut dyn FnMut(DeviceStates) -> R) -> R {
        let legacy = DeviceStates {
            serial: lock(&self.serial).save(),
            i8042: lock(&self.i8042).save(),
            cmos: lock(&self.cmos).save(),
            virtio: Vec::new(),
        };
        with_frozen_virtio(&self.virtio, legacy, f)
    }

    /// Before the states are taken: each device whose queues another process serves
    /// (virtio-fs) takes them back and has its server save its state. The VM's resume
    /// calls [`resume_external`](Self::resume_external).
    pub fn pause_external(&self) -> Result<(), crate::snapshot::SnapshotError> {
        for (index, device) in self.virtio.iter().enumerate() {
            lock(device).pause_external().map_err(|source| {
                crate::snapshot::SnapshotError::External {
                    slot: index + 1,
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// The VM runs again: the servers a snapshot paused get their queues back.
    pub fn resume_external(&self) {
        for device in &self.virtio {
            lock(device).resume_external();
        }
    }
}

fn with_frozen_virtio<R>(
    devices: &[Arc<Mutex<virtio::VirtioPciDevice>>],
    mut states: DeviceStates,
    f: &mut dyn FnMut(DeviceStates) -> R,
) -> R {
    match devices.split_first() {
        None => f(states),
        Some((first, rest)) => lock(first).with_frozen_state(|state| {
            states.virtio.push(state);
            with_frozen_virtio(rest, states, f)
        }),
    }
}
