//! The whole virtio-fs path without KVM: an [`FsDevice`] (with the real virtiofsd) behind
//! vessel's virtio PCI transport, brought up through its BAR the way Linux's virtio-pci
//! driver does. At DRIVER_OK the transport hands the queues to virtiofsd; a FUSE_INIT
//! kicked through the notify register is answered on the queue's MSI-X irqfd, or, without
//! MSI-X, on the relay the VMM's I/O thread turns into INTx. A reset takes the queues back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use devices::bus::BusDevice;
use pci::{IntxLine, MsiInterrupt, MsiMessage, PciDevice};
use virtio::{bar_layout, status, VirtioPciDevice};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::virtiofsd::{binary, in_header, FUSE_INIT, REPLY, REQ};
use super::*;
use crate::fs::Share;
use crate::fs_device::{FsDevice, QUEUE_SIZE};

/// MSI-X vectors as irqfds, as the VMM's KvmMsiVectors offers them.
struct Irqfds(Vec<EventFd>);

impl MsiInterrupt for Irqfds {
    fn update(&self, _vector: u16, _msg: MsiMessage, _masked: bool) {}
    fn trigger(&self, vector: u16) {
        let _ = self.0[usize::from(vector)].write(1);
    }
    fn irqfd(&self, vector: u16) -> Option<&EventFd> {
        self.0.get(usize::from(vector))
    }
}

#[derive(Default)]
struct Line(AtomicBool);

impl IntxLine for Line {
    fn set_level(&self, asserted: bool) {
        self.0.store(asserted, Ordering::SeqCst);
    }
}

struct Bar(Arc<Mutex<VirtioPciDevice>>);

impl Bar {
    fn write(&self, offset: u64, data: &[u8]) {
        self.0.lock().unwrap().write(offset, data);
    }
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.0.lock().unwrap().read(offset, data);
    }
    fn common16(&self, reg: u64, v: u16) {
        self.write(bar_layout::COMMON + reg, &v.to_le_bytes());
    }
    fn common32(&self, reg: u64, v: u32) {
        self.write(bar_layout::COMMON + reg, &v.to_le_bytes());
    }
    fn set_status(&self, s: u8) {
        self.write(bar_layout::COMMON + 0x14, &[s]);
    }
    fn status(&self) -> u8 {
        let mut b = [0u8];
        self.read(bar_layout::COMMON + 0x14, &mut b);
        b[0]
    }
    fn device_features(&self) -> u64 {
        let mut f = 0u64;
        for half in 0..2u32 {
            self.common32(0x00, half);
            let mut b = [0u8; 4];
            self.read(bar_layout::COMMON + 0x04, &mut b);
            f |= u64::from(u32::from_le_bytes(b)) << (32 * half);
        }
        f
    }
}

/// Bring the device up as Linux does; with `msix`, queue q gets vector q + 1.
fn bring_up(bar: &Bar, dev: &Arc<Mutex<VirtioPciDevice>>, rings: &[Ring; 2], msix: bool) {
    bar.set_status(0);
    bar.set_status(status::ACKNOWLEDGE | status::DRIVER);
    let features = bar.device_features();
    for half in 0..2u32 {
        bar.common32(0x08, half);
        bar.common32(0x0c, (features >> (32 * half)) as u32);
    }
    bar.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    assert_ne!(bar.status() & status::FEATURES_OK, 0);
    if msix {
        for v in 0..3u64 {
            let entry = bar_layout::MSIX_TABLE + 16 * v;
            bar.write(entry, &0xfee0_0000u32.to_le_bytes());
            bar.write(entry + 12, &0u32.to_le_bytes()); // unmasked
        }
        let mut d = dev.lock().unwrap();
        let cap = d.config().msix_capability().unwrap();
        d.config_write(cap + 2, &0x8000u16.to_le_bytes());
        drop(d);
        bar.common16(0x10, 0);
    }
    for (q, ring) in rings.iter().enumerate() {
        let c = ring.config();
        bar.common16(0x16, q as u16);
        bar.common16(0x18, c.queue_size);
        for (reg, addr) in [
            (0x20, c.desc_table_addr),
            (0x28, c.avail_ring_addr),
            (0x30, c.used_ring_addr),
        ] {
            let gpa = addr - FRONTEND_VA;
            bar.common32(reg, gpa as u32);
            bar.common32(reg + 4, (gpa >> 32) as u32);
        }
        if msix {
            bar.common16(0x1a, q as u16 + 1);
        }
        bar.common16(0x1c, 1);
    }
    let s = bar.status();
    bar.set_status(s | status::DRIVER_OK);
}

/// FUSE_INIT on the request queue, kicked through its notify register; `call` is the
/// eventfd virtiofsd signals. Returns the reply's FUSE major version.
fn fuse_init(bar: &Bar, guest: &Guest, ring: &mut Ring, call: &EventFd) -> u32 {
    let mut init = in_header(16, FUSE_INIT, 1, 0);
    for v in [7u32, 31, 0x20000, 0] {
        init.extend_from_slice(&v.to_le_bytes());
    }
    guest.mem.write_slice(&init, GuestAddress(REQ)).unwrap();
    ring.push(
        &guest.mem,
        &[(REQ, init.len() as u32, false), (REPLY, 4096, true)],
    );
    let before = ring.used_idx(&guest.mem);
    let notify = bar_layout::NOTIFY + u64::from(bar_layout::NOTIFY_OFF_MULTIPLIER);
    bar.write(notify, &1u16.to_le_bytes());
    assert!(readable(call, 5000), "no interrupt from virtiofsd");
    ring.wait_used(&guest.mem, before + 1);
    let mut reply = [0u8; 20];
    guest
        .mem
        .read_slice(&mut reply, GuestAddress(REPLY))
        .unwrap();
    assert_eq!(i32::from_le_bytes(reply[4..8].try_into().unwrap()), 0);
    u32::from_le_bytes(reply[16..20].try_into().unwrap())
}

fn plugged(msix: bool) -> Option<()> {
    let binary = binary()?;
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let socket = dir.path().join("fs.sock");
    let device =
        FsDevice::start(&binary, Share::new(&shared, "t", false).unwrap(), &socket).unwrap();
    assert!(
        !socket.exists(),
        "the socket goes once the device is connected"
    );
    let daemon = device.daemon();
    let guest = Guest::new();
    let irqfds = Arc::new(Irqfds((0..3).map(|_| EventFd::new(0).unwrap()).collect()));
    let line = Arc::new(Line::default());
    let dev = VirtioPciDevice::new(
        Box::new(device),
        guest.mem.clone(),
        0xc000_0000,
        irqfds.clone(),
        Some(line.clone()),
    )
    .unwrap();
    let processor = dev.queue_processor();
    assert!(processor.is_external());
    let dev = Arc::new(Mutex::new(dev));
    let bar = Bar(dev.clone());
    let mut rings = [Ring::new(0, QUEUE_SIZE), Ring::new(1, QUEUE_SIZE)];
    bring_up(&bar, &dev, &rings, msix);
    assert_eq!(bar.status() & status::DEVICE_NEEDS_RESET, 0);
    if msix {
        // virtiofsd interrupts through the irqfd of queue 1's vector (2): no VMM thread.
        assert_eq!(fuse_init(&bar, &guest, &mut rings[1], &irqfds.0[2]), 7);
    } else {
        // Without MSI-X: the relay, which the I/O thread turns into the ISR bit and INTx.
        let relay = processor.call_relay(1).unwrap();
        assert_eq!(fuse_init(&bar, &guest, &mut rings[1], relay), 7);
        processor.relay_call(1).unwrap();
        assert!(line.0.load(Ordering::SeqCst));
        let mut isr = [0u8];
        bar.read(bar_layout::ISR, &mut isr);
        assert_eq!(isr[0] & 1, 1);
    }
    // A driver reset takes the queues back (GET_VRING_BASE) without an error.
    bar.set_status(0);
    assert_eq!(bar.status(), 0);
    // The VM's end: the connection is closed and virtiofsd reaped.
    daemon.stop();
    Some(())
}

#[test]
fn virtiofsd_serves_queues_the_transport_hands_over_with_msix_irqfds() {
    plugged(true);
}

#[test]
fn without_msix_virtiofsd_interrupts_through_the_intx_relay() {
    plugged(false);
}
