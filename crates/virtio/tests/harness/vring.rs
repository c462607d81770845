//! The driver's view of a split virtqueue in guest memory.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

/// One buffer of a request: guest address, length, device-writable.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

impl Buf {
    pub fn r(addr: u64, len: u32) -> Self {
        Self {
            addr,
            len,
            writable: false,
        }
    }
    pub fn w(addr: u64, len: u32) -> Self {
        Self {
            addr,
            len,
            writable: true,
        }
    }
}

pub struct DriverQueue {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_desc: u16,
    pub avail_idx: u16,
    last_used: u16,
}

impl DriverQueue {
    pub fn new(size: u16, base: u64) -> Self {
        Self {
            size,
            desc: base,
            avail: base + 0x4000,
            used: base + 0x8000,
            next_desc: 0,
            avail_idx: 0,
            last_used: 0,
        }
    }

    #[allow(clippy::too_many_arguments)] // mirrors the descriptor's fields
    pub fn write_desc(
        &self,
        mem: &GuestMemoryMmap,
        table: u64,
        i: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&raw, GuestAddress(table + 16 * u64::from(i)))
            .unwrap();
    }

    /// Write `bufs` as a chain of direct descriptors; returns the head (not yet offered).
    pub fn chain(&mut self, mem: &GuestMemoryMmap, bufs: &[Buf]) -> u16 {
        let head = self.next_desc;
        for (k, b) in bufs.iter().enumerate() {
            let i = (head + k as u16) % self.size;
            let last = k + 1 == bufs.len();
            let flags = if b.writable { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.write_desc(mem, self.desc, i, b.addr, b.len, flags, (i + 1) % self.size);
        }
        self.next_desc = (head + bufs.len().max(1) as u16) % self.size;
        head
    }

    /// Write `bufs` into an indirect table at `table`, referenced by one descriptor.
    pub fn indirect_chain(&mut self, mem: &GuestMemoryMmap, table: u64, bufs: &[Buf]) -> u16 {
        for (k, b) in bufs.iter().enumerate() {
            let last = k + 1 == bufs.len();
            let flags = if b.writable { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.write_desc(mem, table, k as u16, b.addr, b.len, flags, k as u16 + 1);
        }
        let head = self.next_desc;
        self.write_desc(
            mem,
            self.desc,
            head,
            table,
            16 * bufs.len() as u32,
            F_INDIRECT,
            0,
        );
        self.next_desc = (head + 1) % self.size;
        head
    }

    /// Put `head` in the available ring and publish the new index.
    pub fn offer(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        mem.write_obj(head, GuestAddress(self.avail + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Publish an arbitrary available index (hostile tests).
    pub fn set_avail_idx(&mut self, mem: &GuestMemoryMmap, idx: u16) {
        self.avail_idx = idx;
        mem.write_obj(idx, GuestAddress(self.avail + 2)).unwrap();
    }

    /// VIRTIO_F_EVENT_IDX used_event (in the avail ring).
    pub fn set_used_event(&self, mem: &GuestMemoryMmap, value: u16) {
        mem.write_obj(
            value,
            GuestAddress(self.avail + 4 + 2 * u64::from(self.size)),
        )
        .unwrap();
    }

    /// VIRTIO_F_EVENT_IDX avail_event (in the used ring), written by the device.
    pub fn avail_event(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used + 4 + 8 * u64::from(self.size)))
            .unwrap()
    }

    /// New used entries since the last call: (id, len).
    pub fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<(u32, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.last_used != idx {
            let slot = u64::from(self.last_used % self.size);
            let id: u32 = mem
                .read_obj(GuestAddress(self.used + 4 + 8 * slot))
                .unwrap();
            let len: u32 = mem
                .read_obj(GuestAddress(self.used + 8 + 8 * slot))
                .unwrap();
            out.push((id, len));
            self.last_used = self.last_used.wrapping_add(1);
        }
        out
    }
}
