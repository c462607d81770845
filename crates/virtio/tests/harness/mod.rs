//! A driver-side harness that brings a virtio PCI device up the way Linux's virtio_pci
//! (modern) and virtio core do: config space through 0xCF8/0xCFC and ECAM, capability
//! walk, BAR sizing, MSI-X setup, reset / ACKNOWLEDGE / DRIVER / features / FEATURES_OK,
//! queue setup, DRIVER_OK; then requests through the rings, notify writes, and
//! `process_queue` as the VMM's I/O thread would call it.
#![allow(dead_code)]

pub mod disk;
pub mod irq;
pub mod vring;

use std::sync::{Arc, Mutex};

use devices::bus::{Bus, BusDevice};
use pci::{BarAllocator, BarKind, PciConfigIo, PciConfigMmio, PciRoot};
use virtio::{status, QueueProcessor, VirtioDevice, VirtioPciDevice, VIRTIO_PCI_BAR_SIZE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use irq::{RecordingIntx, RecordingMsi};
use vring::DriverQueue;

pub const MEM_SIZE: usize = 16 << 20;
pub const ECAM_BASE: u64 = 0xe000_0000;
const RING_BASE: u64 = 0x10_0000;
const DATA_BASE: u64 = 0x40_0000;
pub const MSI_ADDR: u64 = 0xfee0_0000;

/// Where the driver found the virtio structures (BAR offsets).
#[derive(Debug, Default, Clone, Copy)]
pub struct Caps {
    pub common: u64,
    pub notify: u64,
    pub notify_mult: u32,
    pub isr: u64,
    pub device: u64,
    pub device_len: u32,
    pub pci_cfg: usize,
    pub msix: usize,
}

pub struct Driver {
    pub mem: GuestMemoryMmap,
    pub root: Arc<Mutex<PciRoot>>,
    pub cfg_io: PciConfigIo,
    pub ecam: PciConfigMmio,
    pub dev: Arc<Mutex<VirtioPciDevice>>,
    pub mmio: Bus,
    pub slot: u8,
    pub bar: u64,
    pub caps: Caps,
    pub msi: Arc<RecordingMsi>,
    pub intx: Arc<RecordingIntx>,
    pub processor: QueueProcessor,
    pub queues: Vec<DriverQueue>,
    next_data: u64,
}

/// Driver options.
#[derive(Clone, Copy)]
pub struct Setup {
    pub msix: bool,
    pub event_idx: bool,
    pub indirect: bool,
    /// Queue size to program (None: the device's maximum).
    pub queue_size: Option<u16>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            msix: true,
            event_idx: false,
            indirect: true,
            queue_size: None,
        }
    }
}

impl Driver {
    /// Plug `device` into a fresh root and map it; does not initialise it yet.
    pub fn plug(device: Box<dyn VirtioDevice>) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let mut alloc =
            BarAllocator::new((0xc000_0000, 0x1000_0000), (0x1_0000_0000, 1 << 32)).unwrap();
        let bar = alloc
            .allocate(
                VIRTIO_PCI_BAR_SIZE,
                BarKind::Memory64 {
                    prefetchable: false,
                },
            )
            .unwrap();
        let msi = Arc::new(RecordingMsi::default());
        let intx = Arc::new(RecordingIntx::default());
        let dev = VirtioPciDevice::new(device, mem.clone(), bar, msi.clone(), Some(intx.clone()))
            .unwrap();
        let processor = dev.queue_processor();
        let dev = Arc::new(Mutex::new(dev));
        let root = Arc::new(Mutex::new(PciRoot::new(None)));
        let slot = root.lock().unwrap().add_device(None, dev.clone()).unwrap();
        let mmio = Bus::new();
        mmio.insert(dev.clone(), bar, VIRTIO_PCI_BAR_SIZE).unwrap();
        Self {
            cfg_io: PciConfigIo::new(root.clone()),
            ecam: PciConfigMmio::new(root.clone()),
            mem,
            root,
            dev,
            mmio,
            slot,
            bar: 0,
            caps: Caps::default(),
            msi,
            intx,
            processor,
            queues: Vec::new(),
            next_data: DATA_BASE,
        }
    }

    // ---- configuration space (0xCF8/0xCFC like early Linux, ECAM for the rest) ----

    pub fn cfg_read32(&mut self, offset: usize) -> u32 {
        let addr = 0x8000_0000u32 | u32::from(self.slot) << 11 | (offset as u32 & 0xfc);
        self.cfg_io.write(0, &addr.to_le_bytes());
        let mut d = [0u8; 4];
        self.cfg_io.read(4, &mut d);
        u32::from_le_bytes(d)
    }
    pub fn cfg_read8(&mut self, offset: usize) -> u8 {
        let mut d = [0u8; 1];
        self.ecam
            .read((u64::from(self.slot) << 15) + offset as u64, &mut d);
        d[0]
    }
    pub fn cfg_write(&mut self, offset: usize, data: &[u8]) {
        self.ecam
            .write((u64::from(self.slot) << 15) + offset as u64, data);
    }

    /// Identify the function, walk the capabilities, size and place BAR0, enable decoding.
    pub fn probe(&mut self) -> (u16, u16) {
        let id = self.cfg_read32(0);
        let mut ptr = self.cfg_read8(0x34) as usize;
        let mut guard = 0;
        while ptr != 0 && guard < 48 {
            guard += 1;
            let cap_id = self.cfg_read8(ptr);
            if cap_id == 0x11 {
                self.caps.msix = ptr;
            } else if cap_id == 0x09 {
                let cfg_type = self.cfg_read8(ptr + 3);
                let offset = u64::from(self.cfg_read32(ptr + 8));
                let len = self.cfg_read32(ptr + 12);
                match cfg_type {
                    1 => self.caps.common = offset,
                    2 => {
                        self.caps.notify = offset;
                        self.caps.notify_mult = self.cfg_read32(ptr + 16);
                    }
                    3 => self.caps.isr = offset,
                    4 => {
                        self.caps.device = offset;
                        self.caps.device_len = len;
                    }
                    5 => self.caps.pci_cfg = ptr,
                    _ => {}
                }
            }
            ptr = self.cfg_read8(ptr + 1) as usize;
        }
        // Size BAR0/1 (64-bit) with decoding off, as the PCI core does.
        self.cfg_write(4, &[0, 0]);
        let low = self.cfg_read32(0x10);
        let high = self.cfg_read32(0x14);
        self.cfg_write(0x10, &[0xff; 4]);
        self.cfg_write(0x14, &[0xff; 4]);
        let size_mask =
            u64::from(self.cfg_read32(0x10) & !0xf) | u64::from(self.cfg_read32(0x14)) << 32;
        assert_eq!(!size_mask + 1, VIRTIO_PCI_BAR_SIZE);
        self.cfg_write(0x10, &low.to_le_bytes());
        self.cfg_write(0x14, &high.to_le_bytes());
        assert_eq!(low & 0x7, 0x4, "64-bit memory BAR");
        self.bar = u64::from(low & !0xf) | u64::from(high) << 32;
        self.cfg_write(4, &0x0006u16.to_le_bytes()); // memory + bus master
        ((id & 0xffff) as u16, (id >> 16) as u16)
    }

    // ---- BAR accesses through the MMIO bus ----

    pub fn read_bar(&self, offset: u64, data: &mut [u8]) {
        assert!(self.mmio.read(self.bar + offset, data));
    }
    pub fn write_bar(&self, offset: u64, data: &[u8]) {
        assert!(self.mmio.write(self.bar + offset, data));
    }
    pub fn common_read8(&self, reg: u64) -> u8 {
        let mut d = [0u8; 1];
        self.read_bar(self.caps.common + reg, &mut d);
        d[0]
    }
    pub fn common_read16(&self, reg: u64) -> u16 {
        let mut d = [0u8; 2];
        self.read_bar(self.caps.common + reg, &mut d);
        u16::from_le_bytes(d)
    }
    pub fn common_read32(&self, reg: u64) -> u32 {
        let mut d = [0u8; 4];
        self.read_bar(self.caps.common + reg, &mut d);
        u32::from_le_bytes(d)
    }
    pub fn common_write8(&self, reg: u64, v: u8) {
        self.write_bar(self.caps.common + reg, &[v]);
    }
    pub fn common_write16(&self, reg: u64, v: u16) {
        self.write_bar(self.caps.common + reg, &v.to_le_bytes());
    }
    pub fn common_write32(&self, reg: u64, v: u32) {
        self.write_bar(self.caps.common + reg, &v.to_le_bytes());
    }
    pub fn status(&self) -> u8 {
        self.common_read8(0x14)
    }
    pub fn set_status(&self, s: u8) {
        self.common_write8(0x14, s);
    }
    pub fn device_config(&self, offset: u64, data: &mut [u8]) {
        self.read_bar(self.caps.device + offset, data);
    }
    pub fn read_isr(&self) -> u8 {
        let mut d = [0u8; 1];
        self.read_bar(self.caps.isr, &mut d);
        d[0]
    }

    /// Device features (both halves).
    pub fn device_features(&self) -> u64 {
        self.common_write32(0x00, 0);
        let lo = u64::from(self.common_read32(0x04));
        self.common_write32(0x00, 1);
        let hi = u64::from(self.common_read32(0x04));
        lo | hi << 32
    }

    pub fn write_driver_features(&self, features: u64) {
        self.common_write32(0x08, 0);
        self.common_write32(0x0c, features as u32);
        self.common_write32(0x08, 1);
        self.common_write32(0x0c, (features >> 32) as u32);
    }

    /// Program MSI-X vector `v` (message data 0x20 + v) and unmask it.
    pub fn program_vector(&self, v: u16) {
        let table = 0x4000 + 16 * u64::from(v);
        self.write_bar(table, &(MSI_ADDR as u32).to_le_bytes());
        self.write_bar(table + 4, &0u32.to_le_bytes());
        self.write_bar(table + 8, &(0x20 + u32::from(v)).to_le_bytes());
        self.write_bar(table + 12, &0u32.to_le_bytes());
    }

    pub fn set_msix_control(&mut self, control: u16) {
        let cap = self.caps.msix;
        self.cfg_write(cap + 2, &control.to_le_bytes());
    }

    /// Reset, then negotiate `wanted` ∩ device features; returns whether FEATURES_OK stuck.
    pub fn negotiate(&mut self, wanted: u64) -> bool {
        self.set_status(0);
        assert_eq!(
            self.status(),
            0,
            "reset completes before the status reads 0"
        );
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER);
        let offered = self.device_features();
        self.write_driver_features(offered & wanted);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        self.status() & status::FEATURES_OK != 0
    }

    /// Like [`Self::negotiate`] but acks exactly `features`, offered or not.
    pub fn negotiate_raw(&mut self, features: u64) -> bool {
        self.set_status(0);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER);
        self.write_driver_features(features);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        self.status() & status::FEATURES_OK != 0
    }

    /// Set up every queue as Linux does (vector per queue, config vector 0) and DRIVER_OK.
    pub fn setup_queues(&mut self, setup: Setup) {
        let nq = self.common_read16(0x12);
        if setup.msix {
            for v in 0..=nq {
                self.program_vector(v);
            }
            self.set_msix_control(0x8000);
            self.common_write16(0x10, 0);
            assert_eq!(self.common_read16(0x10), 0);
        }
        self.queues.clear();
        for q in 0..nq {
            self.common_write16(0x16, q);
            let max = self.common_read16(0x18);
            let size = setup.queue_size.unwrap_or(max);
            self.common_write16(0x18, size);
            let dq = DriverQueue::new(size, RING_BASE + u64::from(q) * 0x1_0000);
            self.common_write32(0x20, dq.desc as u32);
            self.common_write32(0x24, (dq.desc >> 32) as u32);
            self.common_write32(0x28, dq.avail as u32);
            self.common_write32(0x2c, (dq.avail >> 32) as u32);
            self.common_write32(0x30, dq.used as u32);
            self.common_write32(0x34, (dq.used >> 32) as u32);
            if setup.msix {
                self.common_write16(0x1a, q + 1);
                assert_eq!(self.common_read16(0x1a), q + 1);
            }
            self.common_write16(0x1c, 1);
            self.queues.push(dq);
        }
        let s = self.status();
        self.set_status(s | status::DRIVER_OK);
    }

    /// The whole bring-up with the device's features plus the ring features of `setup`.
    pub fn init(&mut self, setup: Setup) {
        self.probe();
        let mut wanted = self.device_features()
            & !(virtio::features::RING_EVENT_IDX | virtio::features::RING_INDIRECT_DESC);
        if setup.event_idx {
            wanted |= virtio::features::RING_EVENT_IDX;
        }
        if setup.indirect {
            wanted |= virtio::features::RING_INDIRECT_DESC;
        }
        assert!(self.negotiate(wanted));
        self.setup_queues(setup);
        assert_eq!(self.status() & status::DRIVER_OK, status::DRIVER_OK);
    }

    /// Guest buffer of `len` bytes (4 KiB aligned), filled with `fill`.
    pub fn alloc(&mut self, len: usize, fill: u8) -> u64 {
        let addr = self.next_data;
        self.next_data = (addr + len as u64 + 0xfff) & !0xfff;
        assert!(self.next_data <= MEM_SIZE as u64);
        self.mem
            .write_slice(&vec![fill; len], GuestAddress(addr))
            .unwrap();
        addr
    }

    pub fn mem_write(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    pub fn read_mem(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    /// Notify queue `q` through its notify register, then run it as the I/O thread would
    /// when the ioeventfd fires.
    pub fn kick(&self, q: u16) {
        let off = self.caps.notify + u64::from(q) * u64::from(self.caps.notify_mult);
        self.write_bar(off, &q.to_le_bytes());
        let evt = self.processor.notifier(usize::from(q)).unwrap();
        assert!(
            evt.read().unwrap() >= 1,
            "the notify write kicked the eventfd"
        );
        let _ = self.processor.process_queue(usize::from(q));
    }
}
