//! Fuzz the split virtqueue and the virtio-blk request path: guest memory contents, ring
//! placement, queue size, negotiated ring features and the device's starting ring indices
//! all come from the input. The device must never panic or hang, and must never touch
//! memory outside the guest region or the disk outside its size.
#![no_main]

#[path = "virtio_disk.rs"]
mod virtio_disk;

use libfuzzer_sys::fuzz_target;
use virtio::blk::Block;
use virtio::{Queue, QueueLayout, VirtioDevice};
use virtio_disk::FuzzDisk;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 0x10000;
const DISK_SIZE: usize = 0x8000;

fn u16_at(d: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([d[i], d[i + 1]])
}

fuzz_target!(|data: &[u8]| {
    // Control block: queue size, flags (event idx, indirect, read-only disk), ring
    // addresses (in 16-byte units), rounds of processing.
    if data.len() < 12 {
        return;
    }
    let (ctl, contents) = data.split_at(12);
    let size = u16_at(ctl, 0) % 512;
    let flags = ctl[2];
    let layout = QueueLayout {
        size,
        desc: u64::from(u16_at(ctl, 3) & 0x0fff) * 16,
        avail: u64::from(u16_at(ctl, 5) & 0x0fff) * 16,
        used: u64::from(u16_at(ctl, 7) & 0x0fff) * 16,
    };
    let rounds = 1 + (ctl[9] % 4);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let n = contents.len().min(MEM_SIZE);
    mem.write_slice(&contents[..n], GuestAddress(0)).unwrap();

    let Ok(mut queue) = Queue::new(&mem, layout, flags & 1 != 0, flags & 2 != 0) else {
        return;
    };
    let disk = FuzzDisk::new(DISK_SIZE, flags & 4 != 0);
    let mut blk = Block::new(Box::new(disk), "fuzz");
    for _ in 0..rounds {
        match blk.process_queue(0, &mut queue, &mem) {
            Ok(_) => {
                let _ = queue.needs_notification(&mem);
            }
            Err(_) => break,
        }
    }
});
