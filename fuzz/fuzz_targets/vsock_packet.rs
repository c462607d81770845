//! Fuzz the virtio-vsock device: guest memory contents, ring placement and queue size come
//! from the input, so the transmit queue carries arbitrary headers (CIDs, ports, ops, types,
//! lengths, credit fields) over arbitrary descriptor chains, and the receive queue gets
//! arbitrary buffers for what the device answers. The device must never panic or hang, and
//! must never touch memory outside the guest region. The host side is real: a listener in
//! a temporary directory, and a host listener at `UDS_PATH_52` so REQUESTs to port 52 open
//! connections that later packets (RW, SHUTDOWN, credit) act on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio::vsock::{Vsock, RX_QUEUE, TX_QUEUE};
use virtio::{Queue, QueueLayout, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 0x10000;

fn u16_at(d: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([d[i], d[i + 1]])
}

fuzz_target!(|data: &[u8]| {
    // Control block: queue size, flags (event idx, indirect), ring addresses for both
    // queues (16-byte units), rounds.
    if data.len() < 16 {
        return;
    }
    let (ctl, contents) = data.split_at(16);
    let size = u16_at(ctl, 0) % 512;
    let flags = ctl[2];
    let layout = |at: usize| QueueLayout {
        size,
        desc: u64::from(u16_at(ctl, at) & 0x0fff) * 16,
        avail: u64::from(u16_at(ctl, at + 2) & 0x0fff) * 16,
        used: u64::from(u16_at(ctl, at + 4) & 0x0fff) * 16,
    };
    let rounds = 1 + (ctl[15] % 4);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let n = contents.len().min(MEM_SIZE);
    mem.write_slice(&contents[..n], GuestAddress(0)).unwrap();

    let (event_idx, indirect) = (flags & 1 != 0, flags & 2 != 0);
    let Ok(mut rx) = Queue::new(&mem, layout(3), event_idx, indirect) else {
        return;
    };
    let Ok(mut tx) = Queue::new(&mem, layout(9), event_idx, indirect) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let _host = std::os::unix::net::UnixListener::bind(dir.path().join("v.sock_52")).unwrap();
    let mut vsock = Vsock::new(3, &uds).unwrap();
    vsock.activate(0);
    for _ in 0..rounds {
        let t = vsock.process_queue(TX_QUEUE, &mut tx, &mem);
        let r = vsock.process_queue(RX_QUEUE, &mut rx, &mem);
        let _ = rx.needs_notification(&mem);
        let _ = tx.needs_notification(&mem);
        if r.is_err() || t.is_err() {
            break;
        }
    }
});
