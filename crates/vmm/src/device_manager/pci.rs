//! The PCI side of the VM: the root complex on the buses (0xCF8 ports and ECAM), virtio
//! devices with their BARs, ioeventfds and interrupts, and BAR relocation at run time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use arch::acpi_pci::intx_gsi;
use arch::layout::{PCI_ECAM_START, PCI_MMIO32_SIZE, PCI_MMIO32_START};
use arch::GuestMemory;
use devices::Bus;
use pci::{
    BarAllocator, BarKind, BarMove, BarMoveHandler, PciConfigIo, PciConfigMmio, PciDevice, PciRoot,
};
use virtio::{QueueProcessor, VirtioDevice, VirtioPciDevice, VIRTIO_PCI_BAR_SIZE};

use crate::irq_routing::{GsiRouter, IrqError, KvmIntx, KvmMsiVectors};

#[derive(Debug, thiserror::Error)]
pub enum PciSetupError {
    #[error("PCI BAR allocation: {0}")]
    Allocator(#[from] pci::AllocatorError),
    #[error("PCI slot: {0}")]
    Root(#[from] pci::RootError),
    #[error("virtio transport: {0}")]
    Transport(#[from] virtio::TransportError),
    #[error("interrupts: {0}")]
    Irq(#[from] IrqError),
    #[error("bus: {0}")]
    Bus(#[from] devices::BusError),
    #[error("KVM_IOEVENTFD: {0}")]
    Ioeventfd(#[source] kvm_ioctls::Error),
    #[error("eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("snapshot holds {saved} virtio devices where the VM has {built}")]
    SnapshotDeviceCount { saved: usize, built: usize },
    #[error("virtio device in slot {slot}: cannot restore its state: {source}")]
    RestoreDevice {
        slot: u8,
        #[source]
        source: virtio::StateError,
    },
}

/// Moves a device's MMIO range and its ioeventfds when the guest reprograms a BAR.
struct BarMover {
    vm: Arc<VmFd>,
    mmio: Arc<Bus>,
    /// Per slot: the queue-notify eventfds and their offsets in the BAR.
    notifiers: Mutex<HashMap<u8, Vec<(u64, EventFd)>>>,
}

impl BarMoveHandler for BarMover {
    fn move_bar(&self, mv: &BarMove) {
        if let Err(e) = self.try_move(mv) {
            tracing::warn!(
                "cannot move BAR {} of slot {} from {:#x} to {:#x}: {e}",
                mv.bar,
                mv.slot,
                mv.old,
                mv.new
            );
        }
    }
}

impl BarMover {
    fn try_move(&self, mv: &BarMove) -> Result<(), PciSetupError> {
        if matches!(mv.kind, BarKind::Io) {
            return Ok(());
        }
        let (device, len) = self.mmio.remove(mv.old)?;
        if let Err(e) = self.mmio.insert(device.clone(), mv.new, len) {
            // Keep the device reachable where it was rather than losing it.
            self.mmio.insert(device, mv.old, len)?;
            return Err(e.into());
        }
        let notifiers = self.notifiers.lock().unwrap_or_else(|p| p.into_inner());
        for (offset, fd) in notifiers.get(&mv.slot).into_iter().flatten() {
            let _ =
                self.vm
                    .unregister_ioevent(fd, &IoEventAddress::Mmio(mv.old + offset), NoDatamatch);
            self.vm
                .register_ioevent(fd, &IoEventAddress::Mmio(mv.new + offset), NoDatamatch)
                .map_err(PciSetupError::Ioeventfd)?;
        }
        Ok(())
    }
}

/// A virtio device to plug in, and the host fds that signal it (a NIC's backend, a rate
/// limiter's timer), which the I/O thread polls to run the device's queues.
pub struct DeviceSpec {
    pub device: Box<dyn VirtioDevice>,
    pub backend_fds: Vec<std::os::fd::RawFd>,
}

impl DeviceSpec {
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        Self {
            device,
            backend_fds: Vec::new(),
        }
    }
}

/// The PCI root with its devices, and what the I/O thread serves.
pub struct PciPlatform {
    pub processors: Vec<QueueProcessor>,
    /// `(fd, index into processors)` of backends the I/O thread polls.
    pub backend_fds: Vec<(std::os::fd::RawFd, usize)>,
    /// The virtio functions in slot order, for snapshots.
    pub devices: Vec<Arc<Mutex<VirtioPciDevice>>>,
    _root: Arc<Mutex<PciRoot>>,
}

/// Build the PCI root on `pio`/`mmio` and plug in `devices` (slots 1, 2, …); with
/// `restore`, each device takes its saved state (one per device, in slot order) and its
/// BAR goes where the guest had it.
pub fn setup(
    vm: &Arc<VmFd>,
    mem: &GuestMemory,
    pio: &Bus,
    mmio: &Arc<Bus>,
    devices: Vec<DeviceSpec>,
    restore: Option<&[virtio::VirtioPciState]>,
) -> Result<PciPlatform, PciSetupError> {
    if let Some(states) = restore {
        if states.len() != devices.len() {
            return Err(PciSetupError::SnapshotDeviceCount {
                saved: states.len(),
                built: devices.len(),
            });
        }
    }
    let mover = Arc::new(BarMover {
        vm: vm.clone(),
        mmio: mmio.clone(),
        notifiers: Mutex::new(HashMap::new()),
    });
    let root = Arc::new(Mutex::new(PciRoot::new(Some(mover.clone()))));
    pio.insert(
        Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
        pci::PCI_CONFIG_IO_BASE,
        pci::PCI_CONFIG_IO_LEN,
    )?;
    mmio.insert(
        Arc::new(Mutex::new(PciConfigMmio::new(root.clone()))),
        PCI_ECAM_START,
        pci::ECAM_BUS_SIZE,
    )?;

    let router = Arc::new(GsiRouter::new(vm.clone()));
    let mut allocator = BarAllocator::new((PCI_MMIO32_START, PCI_MMIO32_SIZE), (0, 0))?;
    let mut processors = Vec::new();
    let mut backend_fds = Vec::new();
    let mut functions = Vec::new();
    for (
        index,
        DeviceSpec {
            device,
            backend_fds: fds,
        },
    ) in devices.into_iter().enumerate()
    {
        backend_fds.extend(fds.into_iter().map(|fd| (fd, index)));
        let slot = (index + 1) as u8;
        let vectors = device.queue_max_sizes().len() as u16 + 1;
        let msi = Arc::new(KvmMsiVectors::new(router.clone(), vm, vectors)?);
        let gsi = intx_gsi(slot);
        let intx = Arc::new(KvmIntx {
            vm: vm.clone(),
            gsi,
        });
        let bar = allocator.allocate(
            VIRTIO_PCI_BAR_SIZE,
            BarKind::Memory64 {
                prefetchable: false,
            },
        )?;
        let mut dev = VirtioPciDevice::new(device, mem.clone(), bar, msi, Some(intx))?;
        dev.config_mut().set_interrupt_line(gsi as u8);
        if let Some(state) = restore.and_then(|states| states.get(index)) {
            dev.restore_registers(state)
                .map_err(|source| PciSetupError::RestoreDevice { slot, source })?;
        }
        let bar = dev.bar_address();
        processors.push(dev.queue_processor());
        let mut notifiers = Vec::new();
        for (offset, fd) in dev.ioeventfds() {
            vm.register_ioevent(fd, &IoEventAddress::Mmio(bar + offset), NoDatamatch)
                .map_err(PciSetupError::Ioeventfd)?;
            notifiers.push((offset, fd.try_clone().map_err(PciSetupError::EventFd)?));
        }
        let dev = Arc::new(Mutex::new(dev));
        functions.push(dev.clone());
        root.lock()
            .unwrap_or_else(|p| p.into_inner())
            .add_device(Some(slot), dev.clone())?;
        mmio.insert(dev, bar, VIRTIO_PCI_BAR_SIZE)?;
        mover
            .notifiers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(slot, notifiers);
    }
    Ok(PciPlatform {
        processors,
        backend_fds,
        devices: functions,
        _root: root,
    })
}
