//! The virtio 1.x modern PCI transport (virtio 1.2 §4.1): one function with a 64-bit
//! memory BAR holding the common configuration, ISR, device configuration, notify
//! registers and the MSI-X table / PBA.
//!
//! Threads: guest accesses to the BAR (the [`BusDevice`] impl) and to configuration space
//! (the [`PciDevice`] impl) run on vCPU threads and only touch registers; a notify access
//! writes the queue's eventfd and returns. Requests run where the VMM calls
//! [`QueueProcessor::process_queue`].

mod caps;
mod common_cfg;
mod external;
mod state;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use devices::bus::BusDevice;
use pci::{
    BarKind, ConfigError, IntxLine, MsiInterrupt, MsixTable, PciConfiguration, PciDevice,
    PciHeader, COMMAND_INTX_DISABLE,
};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use caps::{bar_layout, VIRTIO_PCI_BAR, VIRTIO_PCI_BAR_SIZE};
use common_cfg::{decode, extract_u64, merge_u64, Field};
pub use state::{QueueState, StateError, TransportArgs, VirtioPciState, TRANSPORT_STATE_VERSION};

use crate::device::{VirtioDevice, DEVICE_FEATURES_TRANSPORT};
use crate::features::{RING_EVENT_IDX, RING_INDIRECT_DESC, VERSION_1};
use crate::interrupt::VirtioInterrupt;
use crate::processor::{lock, QueueProcessor, Shared};
use crate::queue::{Queue, QueueLayout};
use crate::status;

/// "No MSI-X vector" in config_msix_vector / queue_msix_vector.
pub const NO_VECTOR: u16 = 0xffff;
const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("PCI configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("creating a queue eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("device has {0} queues; 1..=64 supported")]
    QueueCount(usize),
}

/// Driver-visible queue registers.
#[derive(Debug, Clone, Copy)]
struct QueueRegs {
    max_size: u16,
    size: u16,
    enabled: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

impl QueueRegs {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }
}

/// A virtio device behind the modern PCI transport.
pub struct VirtioPciDevice {
    config: PciConfiguration,
    shared: Arc<Shared>,
    device_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    queue_select: u16,
    queues: Vec<QueueRegs>,
    pci_cfg_cap: usize,
    device_config_len: u64,
    /// A snapshot paused the device's queue server ([`crate::external`]), or the device
    /// was restored: the server gets its queues when the VM's vCPUs run.
    external_paused: bool,
}

impl VirtioPciDevice {
    /// Wrap `device`. `bar_addr` is where the VMM maps the BAR (from
    /// [`pci::BarAllocator::allocate`] with [`VIRTIO_PCI_BAR_SIZE`] and a 64-bit memory
    /// kind); MSI-X vectors (one per queue plus one for configuration changes) are
    /// delivered through `msi`, legacy interrupts through `intx` when given.
    pub fn new(
        mut device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        bar_addr: u64,
        msi: Arc<dyn MsiInterrupt>,
        intx: Option<Arc<dyn IntxLine>>,
    ) -> Result<Self, TransportError> {
        let max_sizes = device.queue_max_sizes().to_vec();
        if max_sizes.is_empty() || max_sizes.len() > 64 {
            return Err(TransportError::QueueCount(max_sizes.len()));
        }
        let (class, subclass) = device.pci_class();
        let device_id = VIRTIO_PCI_DEVICE_BASE + device.device_type();
        let header = PciHeader {
            vendor_id: VIRTIO_PCI_VENDOR,
            device_id,
            revision: 1,
            class,
            subclass,
            prog_if: 0,
            subsystem_vendor_id: VIRTIO_PCI_VENDOR,
            subsystem_id: 0x40,
            interrupt_pin_a: intx.is_some(),
        };
        let mut config = PciConfiguration::new(&header);
        config.add_bar(
            usize::from(VIRTIO_PCI_BAR),
            BarKind::Memory64 {
                prefetchable: false,
            },
            VIRTIO_PCI_BAR_SIZE,
            bar_addr,
        )?;
        let device_config_len = (device.config_len() as u64).min(bar_layout::DEVICE_MAX_LEN);
        let pci_cfg_cap = caps::add_virtio_caps(&mut config, device_config_len, max_sizes.len())?;
        let msix = MsixTable::new(max_sizes.len() as u16 + 1, msi);
        let (body, mask) = msix.capability(
            VIRTIO_PCI_BAR,
            bar_layout::MSIX_TABLE as u32,
            bar_layout::MSIX_PBA as u32,
        );
        config.add_capability(pci::CAP_ID_MSIX, &body, &mask)?;
        let notifiers = (0..max_sizes.len())
            .map(|_| EventFd::new(EFD_NONBLOCK).map_err(TransportError::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        let relays = if device.queue_server().is_some() {
            (0..max_sizes.len())
                .map(|_| EventFd::new(EFD_NONBLOCK).map_err(TransportError::EventFd))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        // A device served elsewhere offers only what its server does (the ring features
        // are the server's to implement).
        let device_features = if relays.is_empty() {
            device.features() | DEVICE_FEATURES_TRANSPORT
        } else {
            device.features()
        };
        let shared = Arc::new(Shared {
            mem,
            device: Mutex::new(device),
            queues: max_sizes.iter().map(|_| Mutex::new(None)).collect(),
            interrupt: VirtioInterrupt::new(msix, intx, max_sizes.len()),
            notifiers,
            relays,
            driver_ok: AtomicBool::new(false),
            needs_reset: AtomicBool::new(false),
            config_generation: AtomicU8::new(0),
        });
        Ok(Self {
            config,
            shared,
            device_features,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            queue_select: 0,
            queues: max_sizes.into_iter().map(QueueRegs::new).collect(),
            pci_cfg_cap,
            device_config_len,
            external_paused: false,
        })
    }

    /// The handle the I/O thread uses to run queues.
    pub fn queue_processor(&self) -> QueueProcessor {
        QueueProcessor {
            shared: self.shared.clone(),
        }
    }

    /// Per queue: (offset of its notify register inside the BAR, the eventfd a notify
    /// write kicks). Register each fd as an ioeventfd at `BAR base + offset` (any access
    /// length, no datamatch) and watch it on the I/O thread.
    pub fn ioeventfds(&self) -> Vec<(u64, &EventFd)> {
        self.shared
            .notifiers
            .iter()
            .enumerate()
            .map(|(q, fd)| {
                (
                    bar_layout::NOTIFY + q as u64 * u64::from(bar_layout::NOTIFY_OFF_MULTIPLIER),
                    fd,
                )
            })
            .collect()
    }

    /// Where the BAR is currently mapped (changes after a [`pci::BarMove`]).
    pub fn bar_address(&self) -> u64 {
        self.config
            .bar_mapped_address(usize::from(VIRTIO_PCI_BAR))
            .unwrap_or(0)
    }

    /// Device status as the driver reads it.
    pub fn status(&self) -> u8 {
        let needs_reset = if self.shared.needs_reset.load(Ordering::SeqCst) {
            status::DEVICE_NEEDS_RESET
        } else {
            0
        };
        self.status | needs_reset
    }

    fn reset(&mut self) {
        let shared = &*self.shared;
        shared.driver_ok.store(false, Ordering::SeqCst);
        // Taking each queue's lock waits for a running process_queue to finish.
        for q in &shared.queues {
            *lock(q) = None;
        }
        lock(&shared.device).reset();
        shared.needs_reset.store(false, Ordering::SeqCst);
        shared.interrupt.reset();
        for evt in shared.notifiers.iter().chain(&shared.relays) {
            let _ = evt.read();
        }
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            *q = QueueRegs::new(q.max_size);
        }
    }

    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        // The driver only ever adds bits; clearing them takes a reset.
        let mut new = value | self.status;
        if new & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            let acceptable = self.driver_features & !self.device_features == 0
                && self.driver_features & VERSION_1 != 0;
            if !acceptable {
                new &= !status::FEATURES_OK;
            }
        }
        if new & status::DRIVER_OK != 0 && self.status & status::DRIVER_OK == 0 {
            if new & status::FEATURES_OK == 0 {
                new &= !status::DRIVER_OK;
            } else {
                lock(&self.shared.device).activate(self.driver_features);
                self.shared.driver_ok.store(true, Ordering::SeqCst);
                if self.shared.is_external() {
                    self.start_external(false);
                }
                // Requests may have been queued (and kicked) before DRIVER_OK.
                for evt in &self.shared.notifiers {
                    let _ = evt.write(1);
                }
            }
        }
        self.status = new;
    }

    fn enable_queue(&mut self, index: usize) {
        let Some(regs) = self.queues.get(index).copied() else {
            return;
        };
        if regs.enabled || self.status & status::FEATURES_OK == 0 {
            return;
        }
        let layout = QueueLayout {
            size: regs.size,
            desc: regs.desc,
            avail: regs.driver,
            used: regs.device,
        };
        let event_idx = self.driver_features & RING_EVENT_IDX != 0;
        let indirect = self.driver_features & RING_INDIRECT_DESC != 0;
        let queue = if regs.size > regs.max_size {
            None
        } else {
            Queue::new(&self.shared.mem, layout, event_idx, indirect).ok()
        };
        match queue {
            Some(queue) => {
                *lock(&self.shared.queues[index]) = Some(queue);
                self.queues[index].enabled = true;
            }
            None => self.shared.fail(),
        }
    }

    fn valid_vector(&self, vector: u16) -> u16 {
        let count = self.shared.interrupt.msix().num_vectors();
        if vector < count {
            vector
        } else {
            NO_VECTOR
        }
    }

    fn read_common(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some((field, wide)) = decode(offset, data.len()) else {
            return;
        };
        let q = self.queues.get(usize::from(self.queue_select));
        let interrupt = &self.shared.interrupt;
        let value: u64 = match field {
            Field::DeviceFeatureSelect => self.device_feature_select.into(),
            Field::DeviceFeature => match self.device_feature_select {
                0 => self.device_features & 0xffff_ffff,
                1 => self.device_features >> 32,
                _ => 0,
            },
            Field::DriverFeatureSelect => self.driver_feature_select.into(),
            Field::DriverFeature => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            Field::ConfigMsixVector => interrupt.config_vector().into(),
            Field::NumQueues => self.queues.len() as u64,
            Field::DeviceStatus => self.status().into(),
            Field::ConfigGeneration => self.shared.config_generation.load(Ordering::SeqCst).into(),
            Field::QueueSelect => self.queue_select.into(),
            Field::QueueSize => q.map_or(0, |q| q.size.into()),
            Field::QueueMsixVector => match q {
                Some(_) => interrupt
                    .queue_vector(usize::from(self.queue_select))
                    .into(),
                None => NO_VECTOR.into(),
            },
            Field::QueueEnable => q.map_or(0, |q| q.enabled.into()),
            Field::QueueNotifyOff => q.map_or(0, |_| self.queue_select.into()),
            Field::QueueDesc { high } => q.map_or(0, |q| extract_u64(q.desc, high, wide)),
            Field::QueueDriver { high } => q.map_or(0, |q| extract_u64(q.driver, high, wide)),
            Field::QueueDevice { high } => q.map_or(0, |q| extract_u64(q.device, high, wide)),
        };
        data.copy_from_slice(&value.to_le_bytes()[..data.len()]);
    }

    fn write_common(&mut self, offset: u64, data: &[u8]) {
        let Some((field, wide)) = decode(offset, data.len()) else {
            return;
        };
        let mut raw = [0u8; 8];
        raw[..data.len()].copy_from_slice(data);
        let value = u64::from_le_bytes(raw);
        let select = usize::from(self.queue_select);
        // Queue layout registers are frozen while the queue is enabled.
        let writable = self.queues.get(select).is_some_and(|q| !q.enabled);
        let features_open = self.status & status::FEATURES_OK == 0;
        match field {
            Field::DeviceFeatureSelect => self.device_feature_select = value as u32,
            Field::DriverFeatureSelect => self.driver_feature_select = value as u32,
            Field::DriverFeature if features_open => match self.driver_feature_select {
                0 => self.driver_features = merge_u64(self.driver_features, value, false, false),
                1 => self.driver_features = merge_u64(self.driver_features, value, true, false),
                _ => {}
            },
            Field::ConfigMsixVector => {
                let v = self.valid_vector(value as u16);
                self.shared.interrupt.set_config_vector(v);
            }
            Field::DeviceStatus => self.write_status(value as u8),
            Field::QueueSelect => self.queue_select = value as u16,
            Field::QueueSize if writable => self.queues[select].size = value as u16,
            Field::QueueMsixVector if select < self.queues.len() => {
                let v = self.valid_vector(value as u16);
                self.shared.interrupt.set_queue_vector(select, v);
            }
            Field::QueueEnable if value == 1 => self.enable_queue(select),
            Field::QueueDesc { high } if writable => {
                let q = &mut self.queues[select];
                q.desc = merge_u64(q.desc, value, high, wide);
            }
            Field::QueueDriver { high } if writable => {
                let q = &mut self.queues[select];
                q.driver = merge_u64(q.driver, value, high, wide);
            }
            Field::QueueDevice { high } if writable => {
                let q = &mut self.queues[select];
                q.device = merge_u64(q.device, value, high, wide);
            }
            _ => {}
        }
    }

    fn read_device_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset.saturating_add(data.len() as u64) <= self.device_config_len {
            lock(&self.shared.device).read_config(offset, data);
        }
    }

    fn write_device_config(&self, offset: u64, data: &[u8]) {
        if offset.saturating_add(data.len() as u64) <= self.device_config_len {
            lock(&self.shared.device).write_config(offset, data);
        }
    }

    fn notify(&self, offset: u64) {
        let queue = offset / u64::from(bar_layout::NOTIFY_OFF_MULTIPLIER);
        if let Some(evt) = usize::try_from(queue)
            .ok()
            .and_then(|q| self.shared.notifiers.get(q))
        {
            let _ = evt.write(1);
        }
    }

    fn bar_read(&mut self, offset: u64, data: &mut [u8]) {
        use bar_layout::*;
        match offset {
            o if o < COMMON + 0x1000 => self.read_common(o - COMMON, data),
            o if (ISR..ISR + 0x1000).contains(&o) => {
                data.fill(0);
                if o == ISR {
                    data[0] = self.shared.interrupt.read_isr();
                }
            }
            o if (DEVICE..DEVICE + DEVICE_MAX_LEN).contains(&o) => {
                self.read_device_config(o - DEVICE, data)
            }
            o if (MSIX_TABLE..MSIX_PBA).contains(&o) => self
                .shared
                .interrupt
                .msix()
                .read_table(o - MSIX_TABLE, data),
            o if (MSIX_PBA..MSIX_PBA_END).contains(&o) => {
                self.shared.interrupt.msix().read_pba(o - MSIX_PBA, data)
            }
            _ => data.fill(0),
        }
    }

    fn bar_write(&mut self, offset: u64, data: &[u8]) {
        use bar_layout::*;
        match offset {
            o if o < COMMON + 0x1000 => self.write_common(o - COMMON, data),
            o if (DEVICE..DEVICE + DEVICE_MAX_LEN).contains(&o) => {
                self.write_device_config(o - DEVICE, data)
            }
            o if (NOTIFY..NOTIFY + NOTIFY_LEN).contains(&o) => self.notify(o - NOTIFY),
            o if (MSIX_TABLE..MSIX_PBA).contains(&o) => self
                .shared
                .interrupt
                .msix()
                .write_table(o - MSIX_TABLE, data),
            _ => {}
        }
    }

    /// The window of the PCI-config-access capability: (BAR offset, length) when it
    /// selects a valid 1/2/4-byte access inside our BAR.
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let cap = self.pci_cfg_cap;
        let field = |at: usize| -> u32 {
            let b = self.config.bytes(cap + at, 4).unwrap_or(&[0; 4]);
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        let bar = self
            .config
            .bytes(cap + caps::PCI_CFG_BAR, 1)
            .map_or(0xff, |b| b[0]);
        let offset = u64::from(field(caps::PCI_CFG_OFFSET));
        let len = field(caps::PCI_CFG_LENGTH) as usize;
        let ok = bar == VIRTIO_PCI_BAR
            && matches!(len, 1 | 2 | 4)
            && offset % len as u64 == 0
            && offset + len as u64 <= VIRTIO_PCI_BAR_SIZE;
        ok.then_some((offset, len))
    }
}

impl BusDevice for VirtioPciDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.bar_read(offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.bar_write(offset, data);
    }
}

fn overlaps(offset: usize, len: usize, start: usize, end: usize) -> bool {
    offset < end && start < offset + len
}

impl PciDevice for VirtioPciDevice {
    fn config(&self) -> &PciConfiguration {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }

    fn config_read(&mut self, offset: usize) -> u32 {
        let data_reg = self.pci_cfg_cap + caps::PCI_CFG_DATA;
        if offset == data_reg {
            let mut value = [0u8; 4];
            if let Some((bar_offset, len)) = self.pci_cfg_window() {
                self.bar_read(bar_offset, &mut value[..len]);
            }
            self.config.set_bytes(data_reg, &value);
        }
        self.config.read_dword(offset)
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
        if overlaps(offset, data.len(), 0x04, 0x06) {
            let disabled = self.config.command() & COMMAND_INTX_DISABLE != 0;
            self.shared.interrupt.set_intx_disabled(disabled);
        }
        if let Some(cap) = self.config.msix_capability() {
            if overlaps(offset, data.len(), cap + 2, cap + 4) {
                let b = self.config.bytes(cap + 2, 2).unwrap_or(&[0, 0]);
                let control = u16::from_le_bytes([b[0], b[1]]);
                self.shared.interrupt.msix().set_control(control);
            }
        }
        let data_reg = self.pci_cfg_cap + caps::PCI_CFG_DATA;
        if overlaps(offset, data.len(), data_reg, data_reg + 4) {
            if let Some((bar_offset, len)) = self.pci_cfg_window() {
                let value = self
                    .config
                    .bytes(data_reg, 4)
                    .map(|b| [b[0], b[1], b[2], b[3]])
                    .unwrap_or_default();
                self.bar_write(bar_offset, &value[..len]);
            }
        }
    }
}
