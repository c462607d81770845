//! Fuzz the virtio-balloon queues: guest memory contents (PFN arrays, free page reports,
//! statistics buffers), ring placement, queue size, ring features and which queue is
//! kicked all come from the input. The device must never panic or hang, and must never
//! discard memory outside the guest region.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio::balloon::{Balloon, BalloonConfig, DynamicMemory};
use virtio::{Queue, QueueLayout, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 0x10000;

fn u16_at(d: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([d[i], d[i + 1]])
}

fuzz_target!(|data: &[u8]| {
    // Control block: queue size, flags (event idx, indirect), ring addresses (in 16-byte
    // units), rounds, queue index (inflate, deflate, stats, reporting).
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
    let index = usize::from(ctl[10] % 5);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let n = contents.len().min(MEM_SIZE);
    mem.write_slice(&contents[..n], GuestAddress(0)).unwrap();

    let Ok(mut queue) = Queue::new(&mem, layout, flags & 1 != 0, flags & 2 != 0) else {
        return;
    };
    let Ok((mut balloon, _handle)) = Balloon::new(BalloonConfig {
        amount_mib: u32::from(ctl[11]),
        deflate_on_oom: true,
        stats_polling_interval_s: 1,
        free_page_reporting: true,
        // Dynamic memory on half the runs: hostile statistics reach its policy.
        dynamic: (flags & 4 != 0).then_some(DynamicMemory {
            min_mib: u32::from(ctl[9]) << 2,
            buffer_percent: u16::from(ctl[10]),
            shrink_delay_s: 0,
        }),
    }) else {
        return;
    };
    for _ in 0..rounds {
        match balloon.process_queue(index, &mut queue, &mem) {
            Ok(_) => {
                let _ = queue.needs_notification(&mem);
            }
            Err(_) => break,
        }
        if index == 2 {
            let _ = balloon.request_stats(&mut queue, &mem);
        }
    }
});
