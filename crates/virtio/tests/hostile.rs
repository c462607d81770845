//! A hostile driver: malformed chains fail only their request, broken rings flag
//! DEVICE_NEEDS_RESET with a configuration interrupt; nothing panics or hangs.

mod harness;

use harness::disk::MemDisk;
use harness::vring::{Buf, F_INDIRECT, F_NEXT, F_WRITE};
use harness::{Driver, Setup};
use virtio::blk::Block;
use virtio::status;

const DISK_SIZE: usize = 1 << 20;

fn blk(setup: Setup) -> Driver {
    let (disk, _) = MemDisk::new(DISK_SIZE, false);
    let mut d = Driver::plug(Box::new(Block::new(Box::new(disk), "evil")));
    d.init(setup);
    d
}

fn read_header(d: &mut Driver) -> u64 {
    let h = d.alloc(16, 0);
    d.mem_write(h, &[0; 16]); // T_IN, sector 0
    h
}

/// Offer `head`, kick, and expect exactly one used entry of `len` for it.
fn expect_used(d: &mut Driver, head: u16, len: u32) {
    d.queues[0].offer(&d.mem, head);
    d.kick(0);
    assert_eq!(d.queues[0].take_used(&d.mem), vec![(u32::from(head), len)]);
    assert_eq!(d.status() & status::DEVICE_NEEDS_RESET, 0);
}

/// The queue still works after the bad request.
fn still_serves(d: &mut Driver) {
    let h = read_header(d);
    let buf = d.alloc(512, 0);
    let s = d.alloc(1, 0xee);
    let head = d.queues[0].chain(&d.mem, &[Buf::r(h, 16), Buf::w(buf, 512), Buf::w(s, 1)]);
    expect_used(d, head, 513);
    assert_eq!(d.read_mem(s, 1), vec![0]);
}

fn expect_needs_reset(d: &mut Driver) {
    assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
    assert!(
        d.msi.take().contains(&0),
        "configuration-change interrupt on vector 0"
    );
    // Further kicks do nothing until the driver resets.
    assert!(d.processor.process_queue(0).is_ok());
    d.init(Setup::default());
    assert_eq!(d.status() & status::DEVICE_NEEDS_RESET, 0);
    still_serves(d);
}

#[test]
fn descriptor_loop() {
    let mut d = blk(Setup::default());
    let h = read_header(&mut d);
    let q = &d.queues[0];
    q.write_desc(&d.mem, q.desc, 0, h, 16, F_NEXT, 1);
    q.write_desc(&d.mem, q.desc, 1, h, 16, F_NEXT, 0);
    expect_used(&mut d, 0, 0);
    still_serves(&mut d);
}

#[test]
fn buffer_outside_guest_memory() {
    let mut d = blk(Setup::default());
    let h = read_header(&mut d);
    let s = d.alloc(1, 0);
    let head = d.queues[0].chain(
        &d.mem,
        &[
            Buf::r(h, 16),
            Buf::w(harness::MEM_SIZE as u64 - 256, 512),
            Buf::w(s, 1),
        ],
    );
    expect_used(&mut d, head, 0);
    let head = d.queues[0].chain(&d.mem, &[Buf::r(u64::MAX - 8, 16), Buf::w(s, 1)]);
    expect_used(&mut d, head, 0);
    still_serves(&mut d);
}

#[test]
fn chain_longer_than_the_queue() {
    let mut d = blk(Setup {
        queue_size: Some(8),
        ..Setup::default()
    });
    let q = &d.queues[0];
    // 8 descriptors linked in a cycle through all of the table.
    let buf = 0x50_0000;
    for i in 0..8u16 {
        q.write_desc(&d.mem, q.desc, i, buf, 16, F_NEXT, (i + 1) % 8);
    }
    expect_used(&mut d, 3, 0);
    still_serves(&mut d);
}

#[test]
fn device_writable_where_the_device_must_read() {
    let mut d = blk(Setup::default());
    // Header in a device-writable buffer: no readable header at all.
    let h = read_header(&mut d);
    let s = d.alloc(1, 0xee);
    let head = d.queues[0].chain(&d.mem, &[Buf::w(h, 16), Buf::w(s, 1)]);
    expect_used(&mut d, head, 1);
    assert_eq!(d.read_mem(s, 1), vec![1], "IOERR");
    // Status in a device-readable buffer: nowhere to answer.
    let head = d.queues[0].chain(&d.mem, &[Buf::r(h, 16), Buf::r(s, 1)]);
    expect_used(&mut d, head, 0);
    // Readable after writable breaks the chain rules.
    let head = d.queues[0].chain(&d.mem, &[Buf::r(h, 16), Buf::w(s, 1), Buf::r(h, 16)]);
    expect_used(&mut d, head, 0);
    still_serves(&mut d);
}

#[test]
fn zero_length_buffers() {
    let mut d = blk(Setup::default());
    let h = read_header(&mut d);
    let buf = d.alloc(512, 0);
    let s = d.alloc(1, 0xee);
    // Zero-length descriptors in the middle carry nothing and are skipped.
    let head = d.queues[0].chain(
        &d.mem,
        &[
            Buf::r(h, 16),
            Buf::r(h, 0),
            Buf::w(buf, 512),
            Buf::w(buf, 0),
            Buf::w(s, 1),
        ],
    );
    expect_used(&mut d, head, 513);
    assert_eq!(d.read_mem(s, 1), vec![0]);
    // Only zero-length buffers: no header, no status.
    let head = d.queues[0].chain(&d.mem, &[Buf::r(h, 0), Buf::w(s, 0)]);
    expect_used(&mut d, head, 0);
    still_serves(&mut d);
}

#[test]
fn indirect_tables_with_bad_lengths() {
    let mut d = blk(Setup::default());
    let table = d.alloc(64, 0);
    let h = read_header(&mut d);
    let s = d.alloc(1, 0);
    let q = &d.queues[0];
    q.write_desc(&d.mem, table, 0, h, 16, F_NEXT, 1);
    q.write_desc(&d.mem, table, 1, s, 1, F_WRITE, 0);
    for len in [0u32, 8, 17, 0x10_0000_u32.wrapping_mul(0x1000)] {
        let q = &d.queues[0];
        q.write_desc(&d.mem, q.desc, 0, table, len, F_INDIRECT, 0);
        expect_used(&mut d, 0, 0);
    }
    // Table past the end of guest memory.
    let q = &d.queues[0];
    q.write_desc(
        &d.mem,
        q.desc,
        0,
        harness::MEM_SIZE as u64 - 16,
        32,
        F_INDIRECT,
        0,
    );
    expect_used(&mut d, 0, 0);
    // Indirect next pointing outside the table.
    let q = &d.queues[0];
    q.write_desc(&d.mem, table, 1, s, 1, F_WRITE | F_NEXT, 5);
    q.write_desc(&d.mem, q.desc, 0, table, 32, F_INDIRECT, 0);
    expect_used(&mut d, 0, 0);
    still_serves(&mut d);
}

#[test]
fn indirect_without_negotiation_fails_the_request() {
    let mut d = blk(Setup {
        indirect: false,
        ..Setup::default()
    });
    let table = d.alloc(32, 0);
    let q = &d.queues[0];
    q.write_desc(&d.mem, q.desc, 0, table, 32, F_INDIRECT, 0);
    expect_used(&mut d, 0, 0);
}

#[test]
fn queue_size_not_a_power_of_two() {
    let (disk, _) = MemDisk::new(DISK_SIZE, false);
    let mut d = Driver::plug(Box::new(Block::new(Box::new(disk), "evil")));
    d.probe();
    let f = d.device_features();
    assert!(d.negotiate(f));
    d.setup_queues(Setup {
        queue_size: Some(100),
        ..Setup::default()
    });
    d.common_write16(0x16, 0);
    assert_eq!(d.common_read16(0x1c), 0, "queue stays disabled");
    expect_needs_reset(&mut d);
}

#[test]
fn queue_larger_than_max() {
    let (disk, _) = MemDisk::new(DISK_SIZE, false);
    let mut d = Driver::plug(Box::new(Block::new(Box::new(disk), "evil")));
    d.probe();
    let f = d.device_features();
    assert!(d.negotiate(f));
    d.setup_queues(Setup {
        queue_size: Some(1024),
        ..Setup::default()
    });
    expect_needs_reset(&mut d);
}

#[test]
fn rings_outside_guest_memory() {
    let (disk, _) = MemDisk::new(DISK_SIZE, false);
    let mut d = Driver::plug(Box::new(Block::new(Box::new(disk), "evil")));
    d.probe();
    let f = d.device_features();
    assert!(d.negotiate(f));
    d.common_write16(0x16, 0);
    d.common_write32(0x20, 0);
    d.common_write32(0x24, 0x10); // desc table at 64 GiB
    d.common_write32(0x28, 0x1000);
    d.common_write32(0x30, 0x2000);
    d.common_write16(0x1c, 1);
    assert_eq!(d.common_read16(0x1c), 0);
    assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn avail_index_jumping_past_the_queue_size() {
    let mut d = blk(Setup::default());
    let jump = d.queues[0].size + 5;
    d.queues[0].set_avail_idx(&d.mem, jump);
    let off = d.caps.notify;
    d.write_bar(off, &0u16.to_le_bytes());
    assert!(d.processor.process_queue(0).is_err());
    assert!(d.queues[0].take_used(&d.mem).is_empty());
    expect_needs_reset(&mut d);
}

#[test]
fn head_index_outside_the_queue() {
    let mut d = blk(Setup::default());
    let size = d.queues[0].size;
    d.queues[0].offer(&d.mem, size + 3);
    d.write_bar(d.caps.notify, &0u16.to_le_bytes());
    assert!(d.processor.process_queue(0).is_err());
    expect_needs_reset(&mut d);
}

#[test]
fn garbage_register_accesses_are_ignored() {
    let mut d = blk(Setup::default());
    // Odd widths and offsets in every region, notify for queues that do not exist.
    for off in [
        0x1u64,
        0x3,
        0x13,
        0x37,
        0x40,
        0xfff,
        0x1001,
        0x2fff,
        0x3000 + 4 * 60,
        0x4003,
        0x6000,
        0x7ff8,
    ] {
        d.write_bar(off, &[0xff; 8][..(off as usize % 3) + 1]);
        let mut b = [0u8; 8];
        d.read_bar(off, &mut b[..(off as usize % 4) + 1]);
    }
    d.common_write16(0x16, 7);
    assert_eq!(d.common_read16(0x18), 0, "nonexistent queue has size 0");
    d.common_write16(0x1c, 1);
    d.common_write16(0x16, 0);
    assert_eq!(d.status() & status::DEVICE_NEEDS_RESET, 0);
    still_serves(&mut d);
}
