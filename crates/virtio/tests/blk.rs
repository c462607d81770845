//! virtio-blk driven through the PCI transport as the Linux driver does.

mod harness;

use harness::disk::{DiskState, MemDisk};
use harness::vring::Buf;
use harness::{Driver, Setup};
use virtio::blk::Block;
use virtio::status;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
const DISK_SIZE: usize = 1 << 20;

fn blk(read_only: bool, setup: Setup) -> (Driver, DiskState) {
    let (disk, state) = MemDisk::new(DISK_SIZE, read_only);
    let mut d = Driver::plug(Box::new(Block::new(Box::new(disk), "vessel-disk-0")));
    d.init(setup);
    (d, state)
}

/// A request header buffer.
fn header(d: &mut Driver, t: u32, sector: u64) -> u64 {
    let h = d.alloc(16, 0);
    let mut raw = [0u8; 16];
    raw[0..4].copy_from_slice(&t.to_le_bytes());
    raw[8..16].copy_from_slice(&sector.to_le_bytes());
    d.mem_write(h, &raw);
    h
}

/// Submit one request as header + `data` + status, kick, return (status, used len).
fn submit(d: &mut Driver, t: u32, sector: u64, data: &[Buf]) -> (u8, u32) {
    let h = header(d, t, sector);
    let s = d.alloc(1, 0xee);
    let mut bufs = vec![Buf::r(h, 16)];
    bufs.extend_from_slice(data);
    bufs.push(Buf::w(s, 1));
    let head = d.queues[0].chain(&d.mem, &bufs);
    d.queues[0].offer(&d.mem, head);
    d.kick(0);
    let used = d.queues[0].take_used(&d.mem);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].0, u32::from(head));
    (d.read_mem(s, 1)[0], used[0].1)
}

#[test]
fn pci_identity_caps_and_config() {
    let (disk, _) = MemDisk::new(DISK_SIZE, false);
    let mut d = Driver::plug(Box::new(Block::new(Box::new(disk), "x")));
    let (vendor, device) = d.probe();
    assert_eq!((vendor, device), (0x1af4, 0x1042));
    assert_eq!(d.cfg_read8(0x08), 1, "modern revision");
    assert_eq!(d.caps.notify_mult, 4);
    assert!(d.caps.msix != 0 && d.caps.pci_cfg != 0);
    assert!(d.caps.device_len >= 60);
    assert_eq!(d.cfg_read8(0x3d), 1, "INTx pin A");
    let mut cap = [0u8; 8];
    d.device_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), (DISK_SIZE / 512) as u64);
    let mut w = [0u8; 4];
    d.device_config(20, &mut w);
    assert_eq!(u32::from_le_bytes(w), 512, "blk_size");
    d.device_config(12, &mut w);
    assert_eq!(u32::from_le_bytes(w), 254, "seg_max");
    let f = d.device_features();
    for bit in [2, 6, 9, 13, 14, 28, 29, 32] {
        assert_ne!(f & (1 << bit), 0, "feature bit {bit}");
    }
    assert_eq!(f & (1 << 5), 0, "not read-only");
}

#[test]
fn write_then_read_back() {
    let (mut d, state) = blk(false, Setup::default());
    let data = d.alloc(8192, 0x5a);
    let (st, len) = submit(
        &mut d,
        T_OUT,
        8,
        &[Buf::r(data, 4096), Buf::r(data + 4096, 4096)],
    );
    assert_eq!((st, len), (S_OK, 1));
    assert_eq!(state.bytes(4096, 8192), vec![0x5a; 8192]);
    let buf = d.alloc(8192, 0);
    let (st, len) = submit(&mut d, T_IN, 8, &[Buf::w(buf, 8192)]);
    assert_eq!((st, len), (S_OK, 8193));
    assert_eq!(d.read_mem(buf, 8192), vec![0x5a; 8192]);
    // Reads of untouched sectors see the disk's pattern.
    let (st, _) = submit(&mut d, T_IN, 0, &[Buf::w(buf, 512)]);
    assert_eq!(st, S_OK);
    assert_eq!(d.read_mem(buf, 512), state.bytes(0, 512));
    assert_eq!(
        d.msi.take(),
        vec![1, 1, 1],
        "one MSI-X interrupt per request on vector 1"
    );
}

#[test]
fn flush_reaches_the_disk() {
    let (mut d, state) = blk(false, Setup::default());
    assert_eq!(submit(&mut d, T_FLUSH, 0, &[]), (S_OK, 1));
    assert_eq!(state.flushes(), 1);
}

#[test]
fn unsafe_cache_offers_no_flush_and_does_none() {
    let (disk, state) = MemDisk::new(DISK_SIZE, false);
    let block = Block::new(Box::new(disk), "x").ignoring_flush();
    let mut d = Driver::plug(Box::new(block));
    d.init(Setup::default());
    assert_eq!(
        d.device_features() & (1 << 9),
        0,
        "VIRTIO_BLK_F_FLUSH offered"
    );
    assert_eq!(submit(&mut d, T_FLUSH, 0, &[]), (S_OK, 1));
    assert_eq!(state.flushes(), 0);
}

#[test]
fn writeback_cache_offers_flush() {
    let (d, _) = blk(false, Setup::default());
    assert_ne!(d.device_features() & (1 << 9), 0);
}

#[test]
fn get_id_returns_the_serial() {
    let (mut d, _) = blk(false, Setup::default());
    let buf = d.alloc(20, 0xff);
    assert_eq!(submit(&mut d, T_GET_ID, 0, &[Buf::w(buf, 20)]), (S_OK, 21));
    let mut want = b"vessel-disk-0".to_vec();
    want.resize(20, 0);
    assert_eq!(d.read_mem(buf, 20), want);
}

fn segment(d: &mut Driver, sector: u64, sectors: u32, flags: u32) -> u64 {
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&sector.to_le_bytes());
    raw[8..12].copy_from_slice(&sectors.to_le_bytes());
    raw[12..16].copy_from_slice(&flags.to_le_bytes());
    let a = d.alloc(16, 0);
    d.mem_write(a, &raw);
    a
}

#[test]
fn discard_and_write_zeroes() {
    let (mut d, state) = blk(false, Setup::default());
    let seg = segment(&mut d, 2, 2, 0);
    assert_eq!(submit(&mut d, T_DISCARD, 0, &[Buf::r(seg, 16)]), (S_OK, 1));
    assert_eq!(*state.discards.lock().unwrap(), vec![(1024, 1024)]);
    assert_eq!(state.bytes(1024, 1024), vec![0; 1024]);
    let a = segment(&mut d, 10, 1, 1);
    let b = segment(&mut d, 20, 3, 0);
    assert_eq!(
        submit(&mut d, T_WRITE_ZEROES, 0, &[Buf::r(a, 16), Buf::r(b, 16)]),
        (S_OK, 1)
    );
    assert_eq!(state.bytes(10 * 512, 512), vec![0; 512]);
    assert_eq!(state.bytes(20 * 512, 1536), vec![0; 1536]);
    assert_ne!(state.bytes(11 * 512, 512), vec![0; 512]);
    // Unmap on discard and unknown flags are unsupported; ranges past the end fail.
    let bad = segment(&mut d, 0, 1, 1);
    assert_eq!(submit(&mut d, T_DISCARD, 0, &[Buf::r(bad, 16)]).0, S_UNSUPP);
    let bad = segment(&mut d, 0, 1, 4);
    assert_eq!(
        submit(&mut d, T_WRITE_ZEROES, 0, &[Buf::r(bad, 16)]).0,
        S_UNSUPP
    );
    let past = segment(&mut d, (DISK_SIZE / 512) as u64, 1, 0);
    assert_eq!(
        submit(&mut d, T_WRITE_ZEROES, 0, &[Buf::r(past, 16)]).0,
        S_IOERR
    );
    let odd = d.alloc(8, 0);
    assert_eq!(submit(&mut d, T_DISCARD, 0, &[Buf::r(odd, 8)]).0, S_IOERR);
}

#[test]
fn read_only_disk() {
    let (disk, state) = MemDisk::new(DISK_SIZE, true);
    let mut d = Driver::plug(Box::new(Block::new(Box::new(disk), "ro")));
    d.init(Setup::default());
    let f = d.device_features();
    assert_ne!(f & (1 << 5), 0, "VIRTIO_BLK_F_RO");
    assert_eq!(f & (1 << 13 | 1 << 14), 0, "no discard / write zeroes");
    let data = d.alloc(512, 1);
    assert_eq!(submit(&mut d, T_OUT, 0, &[Buf::r(data, 512)]).0, S_IOERR);
    assert_eq!(state.bytes(0, 512)[1], 7);
    let seg = segment(&mut d, 0, 1, 0);
    assert_eq!(submit(&mut d, T_DISCARD, 0, &[Buf::r(seg, 16)]).0, S_IOERR);
    let buf = d.alloc(512, 0);
    assert_eq!(submit(&mut d, T_IN, 0, &[Buf::w(buf, 512)]).0, S_OK);
}

#[test]
fn beyond_capacity_and_unsupported() {
    let (mut d, _) = blk(false, Setup::default());
    let buf = d.alloc(1024, 0);
    let last = (DISK_SIZE / 512) as u64 - 1;
    assert_eq!(submit(&mut d, T_IN, last, &[Buf::w(buf, 512)]).0, S_OK);
    assert_eq!(submit(&mut d, T_IN, last, &[Buf::w(buf, 1024)]).0, S_IOERR);
    assert_eq!(
        submit(&mut d, T_OUT, u64::MAX / 256, &[Buf::r(buf, 512)]).0,
        S_IOERR
    );
    assert_eq!(
        submit(&mut d, T_IN, 0, &[Buf::w(buf, 100)]).0,
        S_IOERR,
        "not a sector multiple"
    );
    assert_eq!(submit(&mut d, 42, 0, &[]).0, S_UNSUPP);
}

#[test]
fn wrong_direction_data_is_rejected() {
    let (mut d, state) = blk(false, Setup::default());
    let buf = d.alloc(512, 0x77);
    // A read whose data buffer is device-readable.
    assert_eq!(submit(&mut d, T_IN, 0, &[Buf::r(buf, 512)]), (S_IOERR, 1));
    // A write whose data buffer is device-writable: nothing reaches the disk.
    assert_eq!(submit(&mut d, T_OUT, 0, &[Buf::w(buf, 512)]).0, S_IOERR);
    assert_ne!(state.bytes(0, 512), vec![0x77; 512]);
    // GET_ID with a readable buffer.
    assert_eq!(submit(&mut d, T_GET_ID, 0, &[Buf::r(buf, 20)]).0, S_IOERR);
}

#[test]
fn indirect_descriptors() {
    let (mut d, state) = blk(false, Setup::default());
    let h = header(&mut d, T_OUT, 4);
    let data = d.alloc(1024, 0x42);
    let s = d.alloc(1, 0xee);
    let table = d.alloc(64, 0);
    let head = d.queues[0].indirect_chain(
        &d.mem,
        table,
        &[
            Buf::r(h, 16),
            Buf::r(data, 512),
            Buf::r(data + 512, 512),
            Buf::w(s, 1),
        ],
    );
    d.queues[0].offer(&d.mem, head);
    d.kick(0);
    assert_eq!(d.queues[0].take_used(&d.mem), vec![(u32::from(head), 1)]);
    assert_eq!(d.read_mem(s, 1)[0], S_OK);
    assert_eq!(state.bytes(2048, 1024), vec![0x42; 1024]);
}

#[test]
fn event_idx_interrupt_suppression() {
    let (mut d, _) = blk(
        false,
        Setup {
            event_idx: true,
            ..Setup::default()
        },
    );
    let buf = d.alloc(512, 0);
    // Driver asks for an interrupt only after the 2nd completion (used_event = 1).
    d.queues[0].set_used_event(&d.mem, 1);
    submit(&mut d, T_IN, 0, &[Buf::w(buf, 512)]);
    assert!(d.msi.take().is_empty());
    submit(&mut d, T_IN, 0, &[Buf::w(buf, 512)]);
    assert_eq!(d.msi.take(), vec![1]);
    assert_eq!(
        d.queues[0].avail_event(&d.mem),
        2,
        "device asks for a kick at the next request"
    );
}

#[test]
fn intx_and_isr_when_msix_is_off() {
    let (mut d, _) = blk(
        false,
        Setup {
            msix: false,
            ..Setup::default()
        },
    );
    let buf = d.alloc(512, 0);
    assert!(!d.intx.asserted());
    submit(&mut d, T_IN, 0, &[Buf::w(buf, 512)]);
    assert!(d.intx.asserted());
    assert!(d.msi.take().is_empty());
    assert_eq!(d.read_isr(), 1);
    assert!(!d.intx.asserted(), "reading the ISR lowers the line");
    assert_eq!(d.read_isr(), 0);
    // INTx disable in the command register holds the line low.
    d.cfg_write(4, &(0x0006u16 | 1 << 10).to_le_bytes());
    submit(&mut d, T_IN, 0, &[Buf::w(buf, 512)]);
    assert!(!d.intx.asserted());
    assert_eq!(d.read_isr(), 1);
}

#[test]
fn masked_vector_is_pending_until_unmasked() {
    let (mut d, _) = blk(false, Setup::default());
    let buf = d.alloc(512, 0);
    d.write_bar(0x4000 + 16 + 12, &1u32.to_le_bytes()); // mask vector 1
    submit(&mut d, T_IN, 0, &[Buf::w(buf, 512)]);
    assert!(d.msi.take().is_empty());
    let mut pba = [0u8; 8];
    d.read_bar(0x6000, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 0b10);
    d.write_bar(0x4000 + 16 + 12, &0u32.to_le_bytes());
    assert_eq!(d.msi.take(), vec![1]);
    let routes = d.msi.routes.lock().unwrap();
    assert!(routes.iter().any(|&(v, m, masked)| v == 1
        && m.address == harness::MSI_ADDR
        && m.data == 0x21
        && !masked));
}

#[test]
fn feature_negotiation_rules() {
    let (disk, _) = MemDisk::new(DISK_SIZE, false);
    let mut d = Driver::plug(Box::new(Block::new(Box::new(disk), "x")));
    d.probe();
    let offered = d.device_features();
    assert!(
        !d.negotiate(offered & !virtio::features::VERSION_1),
        "VERSION_1 is required"
    );
    assert!(
        !d.negotiate_raw(offered | 1 << 40),
        "features the device did not offer"
    );
    assert!(!d.negotiate_raw(offered & !virtio::features::VERSION_1));
    assert!(d.negotiate(offered));
    // Features are frozen after FEATURES_OK.
    d.write_driver_features(0);
    d.common_write32(0x08, 1);
    assert_eq!(d.common_read32(0x0c), 1, "VERSION_1 still acked");
}

#[test]
fn vectors_out_of_range_read_back_as_no_vector() {
    let (d, _) = blk(false, Setup::default());
    d.common_write16(0x10, 99);
    assert_eq!(d.common_read16(0x10), 0xffff);
    d.common_write16(0x16, 0);
    d.common_write16(0x1a, 2);
    assert_eq!(
        d.common_read16(0x1a),
        0xffff,
        "two vectors only (queue + config)"
    );
}

#[test]
fn reset_drops_queues_and_state() {
    let (mut d, _) = blk(false, Setup::default());
    d.set_status(0);
    assert_eq!(d.status(), 0);
    d.common_write16(0x16, 0);
    assert_eq!(d.common_read16(0x1c), 0, "queue disabled");
    assert_eq!(d.common_read16(0x1a), 0xffff, "vector unassigned");
    assert_eq!(d.common_read16(0x18), 256, "size back to max");
    // A kick after reset does nothing.
    let buf = d.alloc(512, 0);
    let h = header(&mut d, T_IN, 0);
    let head = d.queues[0].chain(&d.mem, &[Buf::r(h, 16), Buf::w(buf, 513)]);
    d.queues[0].offer(&d.mem, head);
    d.processor.process_queue(0).unwrap();
    assert!(d.queues[0].take_used(&d.mem).is_empty());
    // And the device comes up again.
    d.init(Setup::default());
    assert_eq!(submit(&mut d, T_IN, 0, &[Buf::w(buf, 512)]).0, S_OK);
}

#[test]
fn requests_before_driver_ok_wait() {
    let (disk, _) = MemDisk::new(DISK_SIZE, false);
    let mut d = Driver::plug(Box::new(Block::new(Box::new(disk), "x")));
    d.probe();
    let all = d.device_features();
    assert!(d.negotiate(all));
    assert_eq!(d.status() & status::DRIVER_OK, 0);
    d.processor.process_queue(0).unwrap();
    assert!(d.processor.process_queue(7).is_err(), "no such queue");
}

#[test]
fn pci_cfg_capability_window_reads_common_config() {
    let (mut d, _) = blk(false, Setup::default());
    let cap = d.caps.pci_cfg;
    d.cfg_write(cap + 4, &[0]); // BAR 0
    d.cfg_write(cap + 8, &0x12u32.to_le_bytes()); // num_queues
    d.cfg_write(cap + 12, &2u32.to_le_bytes());
    assert_eq!(d.cfg_read32(cap + 16) & 0xffff, 1);
}

#[test]
fn bar_move_is_reported_to_the_vmm() {
    use pci::{BarMove, BarMoveHandler, PciRoot};
    use std::sync::{Arc, Mutex};
    #[derive(Default)]
    struct Moves(Mutex<Vec<BarMove>>);
    impl BarMoveHandler for Moves {
        fn move_bar(&self, mv: &BarMove) {
            self.0.lock().unwrap().push(*mv);
        }
    }
    let (disk, _) = MemDisk::new(DISK_SIZE, false);
    let mut d = Driver::plug(Box::new(Block::new(Box::new(disk), "x")));
    let moves = Arc::new(Moves::default());
    let mut root = PciRoot::new(Some(moves.clone()));
    let slot = root.add_device(None, d.dev.clone()).unwrap();
    let root = Arc::new(Mutex::new(root));
    d.ecam = pci::PciConfigMmio::new(root);
    d.slot = slot;
    d.probe();
    assert!(
        moves.0.lock().unwrap().is_empty(),
        "sizing and restoring is not a move"
    );
    d.cfg_write(4, &[0, 0]);
    d.cfg_write(0x10, &0xd000_0004u32.to_le_bytes());
    d.cfg_write(0x14, &0u32.to_le_bytes());
    d.cfg_write(4, &[0x06, 0]);
    let got = moves.0.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].slot, got[0].bar, got[0].old, got[0].new, got[0].len),
        (slot, 0, 0x1_0000_0000, 0xd000_0000, 0x8000)
    );
    assert_eq!(d.dev.lock().unwrap().bar_address(), 0xd000_0000);
}

#[test]
fn scattered_and_unaligned_buffers() {
    let (mut d, state) = blk(false, Setup::default());
    // Write from three scattered, unaligned pieces (copied through the bounce buffer).
    let a = d.alloc(4096, 0x11) + 100;
    let b = d.alloc(4096, 0x22) + 7;
    let c = d.alloc(4096, 0x33) + 1;
    let (st, _) = submit(
        &mut d,
        T_OUT,
        16,
        &[Buf::r(a, 512), Buf::r(b, 1024), Buf::r(c, 512)],
    );
    assert_eq!(st, S_OK);
    let mut want = vec![0x11; 512];
    want.extend(vec![0x22; 1024]);
    want.extend(vec![0x33; 512]);
    assert_eq!(state.bytes(16 * 512, 2048), want);
    // Read them back into scattered pieces (one split in the middle of a sector).
    let x = d.alloc(4096, 0) + 3;
    let y = d.alloc(4096, 0) + 5;
    let (st, len) = submit(&mut d, T_IN, 16, &[Buf::w(x, 700), Buf::w(y, 1348)]);
    assert_eq!((st, len), (S_OK, 2049));
    let mut got = d.read_mem(x, 700);
    got.extend(d.read_mem(y, 1348));
    assert_eq!(got, want);
}

#[test]
fn io_thread_serves_kicks_and_reset_waits_for_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let (mut d, state) = blk(false, Setup::default());
    let stop = Arc::new(AtomicBool::new(false));
    let io_thread = {
        let processor = d.processor.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let _ = processor.handle_notify(0);
                std::thread::sleep(Duration::from_micros(50));
            }
        })
    };
    let data = d.alloc(512, 0);
    for i in 0..64u64 {
        d.mem_write(data, &[i as u8; 512]);
        let h = header(&mut d, T_OUT, i);
        let s = d.alloc(1, 0xee);
        let head = d.queues[0].chain(&d.mem, &[Buf::r(h, 16), Buf::r(data, 512), Buf::w(s, 1)]);
        d.queues[0].offer(&d.mem, head);
        // Only the notify register write: the I/O thread does the work.
        d.write_bar(d.caps.notify, &0u16.to_le_bytes());
        let deadline = Instant::now() + Duration::from_secs(10);
        let used = loop {
            let used = d.queues[0].take_used(&d.mem);
            if !used.is_empty() || Instant::now() > deadline {
                break used;
            }
            std::thread::yield_now();
        };
        assert_eq!(used, vec![(u32::from(head), 1)], "request {i}");
        assert_eq!(d.read_mem(s, 1), vec![S_OK]);
    }
    assert_eq!(state.bytes(63 * 512, 512), vec![63; 512]);
    // Reset while the I/O thread keeps polling: the status reads 0 once it took effect.
    d.set_status(0);
    assert_eq!(d.status(), 0);
    stop.store(true, Ordering::SeqCst);
    io_thread.join().unwrap();
}

/// A guest must not turn a raw disk whose format was detected into another format: a qcow2
/// header it writes to sector 0 (backing file /etc/shadow) would be opened as qcow2, and
/// the backing file followed, on the next start.
#[test]
fn probed_raw_disk_refuses_a_qcow2_header_in_sector_0() {
    let dir = std::env::temp_dir().join(format!("vessel-blk-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("guest.img");
    std::fs::write(&path, vec![0u8; DISK_SIZE]).unwrap();
    let image = block::open(&path, &block::OpenOptions::default()).unwrap();
    let mut d = Driver::plug(Box::new(Block::new(image, "probed")));
    d.init(Setup::default());

    let mut header = [0u8; 512];
    header[..4].copy_from_slice(b"QFI\xfb");
    header[4..8].copy_from_slice(&3u32.to_be_bytes());
    header[8..16].copy_from_slice(&0x100u64.to_be_bytes());
    header[16..20].copy_from_slice(&11u32.to_be_bytes());
    header[0x100..0x10b].copy_from_slice(b"/etc/shadow");
    let buf = d.alloc(512, 0);
    d.mem_write(buf, &header);
    let (st, _) = submit(&mut d, T_OUT, 0, &[Buf::r(buf, 512)]);
    assert_eq!(st, S_IOERR, "the qcow2 header was written");
    // An ordinary boot sector goes through.
    let mut mbr = [0u8; 512];
    mbr[510..].copy_from_slice(&[0x55, 0xaa]);
    d.mem_write(buf, &mbr);
    let (st, _) = submit(&mut d, T_OUT, 0, &[Buf::r(buf, 512)]);
    assert_eq!(st, S_OK);
    assert_eq!(block::detect(&path).unwrap(), block::Format::Raw);
    assert_eq!(std::fs::read(&path).unwrap()[510..512], [0x55, 0xaa]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rate_limited_disk_defers_requests_until_the_limit_allows() {
    use virtio::rate_limiter::{BucketConfig, Limits, RateLimiterHandle};
    let one_op_per_age = BucketConfig {
        size: 1,
        one_time_burst: 0,
        refill_time_ms: 1 << 40,
    };
    let limiter = RateLimiterHandle::new(Limits {
        bandwidth: None,
        ops: Some(one_op_per_age),
    })
    .unwrap();
    let (disk, _) = MemDisk::new(DISK_SIZE, false);
    let block = Block::new(Box::new(disk), "x").with_rate_limiter(limiter.clone());
    let mut d = Driver::plug(Box::new(block));
    d.init(Setup::default());
    let buf = d.alloc(4096, 0);
    assert_eq!(submit(&mut d, T_IN, 0, &[Buf::w(buf, 4096)]).0, S_OK);
    // The bucket is empty: the next request stays in the ring, kicks or not.
    let h = header(&mut d, T_IN, 0);
    let s = d.alloc(1, 0xee);
    let head = d.queues[0].chain(&d.mem, &[Buf::r(h, 16), Buf::w(buf, 4096), Buf::w(s, 1)]);
    d.queues[0].offer(&d.mem, head);
    d.kick(0);
    d.kick(0);
    assert!(d.queues[0].take_used(&d.mem).is_empty());
    // Lifting the limit (PATCH) lets it through on the next run of the queue.
    let unlimited = BucketConfig::default();
    limiter.update(None, Some(unlimited));
    d.kick(0);
    let used = d.queues[0].take_used(&d.mem);
    assert_eq!(used.len(), 1);
    assert_eq!(d.read_mem(s, 1)[0], S_OK);
}

#[test]
fn a_swapped_disk_serves_the_new_image_with_its_capacity() {
    use virtio::blk::BlockSwapError;
    let (mut d, _) = blk(false, Setup::default());
    let (bigger, bigger_state) = MemDisk::new(2 * DISK_SIZE, false);
    let (read_only, _) = MemDisk::new(DISK_SIZE, true);
    let swap = |d: &Driver, disk: MemDisk| {
        d.processor.with_device(|dev| {
            let block = dev.as_any_mut().unwrap().downcast_mut::<Block>().unwrap();
            block.replace_disk(Box::new(disk))
        })
    };
    assert_eq!(swap(&d, read_only), Err(BlockSwapError::ReadOnlyMismatch));
    swap(&d, bigger).unwrap();
    let mut cap = [0u8; 8];
    d.device_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), (2 * DISK_SIZE / 512) as u64);
    // A read past the old end comes from the new image.
    let buf = d.alloc(512, 0);
    let sector = (DISK_SIZE / 512 + 1) as u64;
    assert_eq!(submit(&mut d, T_IN, sector, &[Buf::w(buf, 512)]).0, S_OK);
    assert_eq!(
        d.read_mem(buf, 512),
        bigger_state.bytes(DISK_SIZE + 512, 512)
    );
}

#[test]
fn writes_and_zeroes_are_logged_for_a_disk_copy_and_reads_are_not() {
    use std::sync::Arc;
    use virtio::blk::written::{count, WrittenChunks, CHUNK_BYTES};
    let (disk, _) = MemDisk::new(DISK_SIZE, false);
    let mut block = Block::new(Box::new(disk), "x");
    let written = Arc::new(WrittenChunks::new(DISK_SIZE as u64));
    block.log_writes(Some(written.clone()));
    let mut d = Driver::plug(Box::new(block));
    d.init(Setup::default());
    let data = d.alloc(8192, 0x5a);
    assert_eq!(submit(&mut d, T_OUT, 8, &[Buf::r(data, 8192)]).0, S_OK);
    let chunk_sectors = CHUNK_BYTES / 512;
    let seg = segment(&mut d, 2 * chunk_sectors + 3, 1, 0);
    assert_eq!(
        submit(&mut d, T_WRITE_ZEROES, 0, &[Buf::r(seg, 16)]).0,
        S_OK
    );
    let buf = d.alloc(4096, 0);
    let read_sector = 5 * chunk_sectors;
    assert_eq!(
        submit(&mut d, T_IN, read_sector, &[Buf::w(buf, 4096)]).0,
        S_OK
    );
    let taken = written.take();
    assert_eq!(count(&taken), 2);
    assert_eq!(taken[0], 0b101, "chunks 0 and 2");
    assert_eq!(count(&written.take()), 0);
}
