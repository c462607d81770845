//! Fuzz the virtio-net receive and transmit paths: guest memory contents, ring placement,
//! queue size, negotiated features, the frames the backend delivers and when the backend
//! refuses frames all come from the input. The device must never panic or hang, and must
//! never touch memory outside the guest region.
#![no_main]

use std::os::fd::RawFd;

use libfuzzer_sys::fuzz_target;
use virtio::net::{Net, NetBackend, F_MRG_RXBUF, MAX_FRAME_LEN, RX_QUEUE, TX_QUEUE};
use virtio::{Queue, QueueLayout, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 0x10000;

fn u16_at(d: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([d[i], d[i + 1]])
}

/// Frames sized by the input (up to and past the device's limit), refusals by a bit mask.
struct FuzzBackend {
    sizes: Vec<usize>,
    refuse: u32,
    sends: u32,
}

impl NetBackend for FuzzBackend {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        let Some(len) = self.sizes.pop() else {
            return Ok(None);
        };
        let len = len.min(buf.len());
        buf[..len].fill(len as u8);
        Ok(Some(len))
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<bool> {
        assert!(frame.len() <= MAX_FRAME_LEN);
        self.sends = self.sends.wrapping_add(1);
        Ok(self.refuse & (1 << (self.sends % 32)) == 0)
    }
    fn as_raw_fd(&self) -> RawFd {
        -1
    }
}

fuzz_target!(|data: &[u8]| {
    // Control block: queue size, flags (event idx, indirect, mergeable buffers), ring
    // addresses for both queues (16-byte units), refusal mask, frame sizes, rounds.
    if data.len() < 32 {
        return;
    }
    let (ctl, contents) = data.split_at(32);
    let size = u16_at(ctl, 0) % 512;
    let flags = ctl[2];
    let layout = |at: usize| QueueLayout {
        size,
        desc: u64::from(u16_at(ctl, at) & 0x0fff) * 16,
        avail: u64::from(u16_at(ctl, at + 2) & 0x0fff) * 16,
        used: u64::from(u16_at(ctl, at + 4) & 0x0fff) * 16,
    };
    let refuse = u32::from_le_bytes([ctl[15], ctl[16], ctl[17], ctl[18]]);
    let sizes = (0..5)
        .map(|k| usize::from(u16_at(ctl, 19 + 2 * k)) * (1 + usize::from(ctl[29] % 2)))
        .collect();
    let rounds = 1 + (ctl[31] % 4);
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
    let backend = FuzzBackend {
        sizes,
        refuse,
        sends: 0,
    };
    let (mut net, _link) = Net::new(Box::new(backend), [2, 0, 0, 0, 0, 1]);
    net.activate(if flags & 4 != 0 { F_MRG_RXBUF } else { 0 });
    for _ in 0..rounds {
        let r = net.process_queue(RX_QUEUE, &mut rx, &mem);
        let t = net.process_queue(TX_QUEUE, &mut tx, &mem);
        let _ = rx.needs_notification(&mem);
        let _ = tx.needs_notification(&mem);
        if r.is_err() || t.is_err() {
            break;
        }
    }
});
