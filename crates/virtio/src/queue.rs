//! Split virtqueues (virtio 1.2 §2.7): the device side of the descriptor table, available
//! ring and used ring in guest memory.
//!
//! Everything read from guest memory is untrusted: ring indices are checked against the
//! queue size, descriptor chains are bounded by the queue size (so loops end), every
//! buffer is checked to lie in guest memory, and indirect tables must be well formed.
//! Written in-crate rather than with virtio-queue so that a malformed chain is reported as
//! a typed error the device can answer (the request fails, or the device needs a reset)
//! instead of a silently truncated chain.

use std::sync::atomic::{fence, Ordering};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap};

/// Largest queue size the split ring format allows.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Most descriptors read from one indirect table (QEMU's VIRTQUEUE_MAX_SIZE).
pub const MAX_INDIRECT_CHAIN: u32 = 1024;

const DESC_SIZE: u64 = 16;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
const AVAIL_F_NO_INTERRUPT: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue size {0} is not a power of two in 1..={max}", max = MAX_QUEUE_SIZE)]
    InvalidSize(u16),
    #[error("{ring} at {addr:#x} is misaligned")]
    Misaligned { ring: &'static str, addr: u64 },
    #[error("{ring} at {addr:#x} ({len} bytes) is outside guest memory")]
    OutOfMemory {
        ring: &'static str,
        addr: u64,
        len: u64,
    },
    #[error("available index moved from {last} to {now}, more than the queue size {size}")]
    AvailIndexJump { last: u16, now: u16, size: u16 },
    #[error("available ring names descriptor {head}, outside a queue of {size}")]
    BadHead { head: u16, size: u16 },
    #[error("guest memory access failed: {0}")]
    Memory(#[from] GuestMemoryError),
}

/// Why one descriptor chain is unusable. The request fails; the queue stays usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("chain is longer than the queue (loop?)")]
    TooLong,
    #[error("descriptor {0} points past its table")]
    BadNext(u16),
    #[error("buffer {addr:#x}+{len:#x} is outside guest memory")]
    BufferOutOfMemory { addr: u64, len: u32 },
    #[error("indirect table of {0} bytes is empty or not a multiple of 16")]
    BadIndirectLength(u32),
    #[error("indirect descriptor inside an indirect table, or with NEXT set")]
    BadIndirect,
    #[error("indirect descriptors were not negotiated")]
    IndirectNotNegotiated,
    #[error("device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
    #[error("descriptor table read failed")]
    TableUnreadable,
}

/// One guest buffer of a chain, already checked to lie inside guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
    /// Device-writable (the device fills it) rather than device-readable.
    pub writable: bool,
}

/// Addresses and size of a queue as the driver configured them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLayout {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

/// A running split virtqueue.
#[derive(Debug)]
pub struct Queue {
    layout: QueueLayout,
    next_avail: u16,
    next_used: u16,
    /// `next_used` when the driver was last considered for an interrupt.
    signalled_used: u16,
    event_idx: bool,
    indirect: bool,
}

fn check_ring(
    mem: &GuestMemoryMmap,
    ring: &'static str,
    addr: u64,
    len: u64,
    align: u64,
) -> Result<(), QueueError> {
    if !addr.is_multiple_of(align) {
        return Err(QueueError::Misaligned { ring, addr });
    }
    let fits = usize::try_from(len).is_ok_and(|l| mem.check_range(GuestAddress(addr), l));
    if !fits {
        return Err(QueueError::OutOfMemory { ring, addr, len });
    }
    Ok(())
}

impl Queue {
    /// Check `layout` against guest memory (sizes, alignment, every ring inside RAM) and
    /// start a queue at index 0. `event_idx` and `indirect` are the negotiated features.
    pub fn new(
        mem: &GuestMemoryMmap,
        layout: QueueLayout,
        event_idx: bool,
        indirect: bool,
    ) -> Result<Self, QueueError> {
        let size = layout.size;
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(QueueError::InvalidSize(size));
        }
        let n = u64::from(size);
        check_ring(mem, "descriptor table", layout.desc, n * DESC_SIZE, 16)?;
        check_ring(mem, "available ring", layout.avail, 6 + 2 * n, 2)?;
        check_ring(mem, "used ring", layout.used, 6 + 8 * n, 4)?;
        Ok(Self {
            layout,
            next_avail: 0,
            next_used: 0,
            signalled_used: 0,
            event_idx,
            indirect,
        })
    }

    /// Like [`Queue::new`], for a ring the driver has already used (a transport that stops
    /// and restarts rings, as vhost-user does): requests are taken from `next_avail` on, and
    /// the used ring continues from the index it holds in guest memory.
    pub fn resume(
        mem: &GuestMemoryMmap,
        layout: QueueLayout,
        event_idx: bool,
        indirect: bool,
        next_avail: u16,
    ) -> Result<Self, QueueError> {
        let mut queue = Self::new(mem, layout, event_idx, indirect)?;
        let used: u16 = mem.load(queue.used_addr(2), Ordering::Acquire)?;
        queue.next_avail = next_avail;
        queue.next_used = used;
        queue.signalled_used = used;
        Ok(queue)
    }

    /// Index of the next available entry the device will take (vhost-user's
    /// "last_avail_idx", which a stopped ring reports).
    pub fn next_avail(&self) -> u16 {
        self.next_avail
    }

    pub fn size(&self) -> u16 {
        self.layout.size
    }

    pub fn layout(&self) -> QueueLayout {
        self.layout
    }

    fn avail_addr(&self, offset: u64) -> GuestAddress {
        GuestAddress(self.layout.avail + offset)
    }
    fn used_addr(&self, offset: u64) -> GuestAddress {
        GuestAddress(self.layout.used + offset)
    }

    /// Requests the driver made available and the device has not taken yet.
    fn pending(&self, mem: &GuestMemoryMmap) -> Result<u16, QueueError> {
        let now: u16 = mem.load(self.avail_addr(2), Ordering::Acquire)?;
        let pending = now.wrapping_sub(self.next_avail);
        if pending > self.layout.size {
            return Err(QueueError::AvailIndexJump {
                last: self.next_avail,
                now,
                size: self.layout.size,
            });
        }
        Ok(pending)
    }

    /// Take the next available descriptor head, if any.
    pub fn pop(&mut self, mem: &GuestMemoryMmap) -> Result<Option<u16>, QueueError> {
        if self.pending(mem)? == 0 {
            return Ok(None);
        }
        let slot = u64::from(self.next_avail % self.layout.size);
        let head: u16 = mem.read_obj(self.avail_addr(4 + 2 * slot))?;
        if head >= self.layout.size {
            return Err(QueueError::BadHead {
                head,
                size: self.layout.size,
            });
        }
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(Some(head))
    }

    /// Give back the head the last [`Queue::pop`] took, unused: it is popped again next
    /// time (a rate-limited device defers the request).
    pub fn undo_pop(&mut self) {
        self.next_avail = self.next_avail.wrapping_sub(1);
    }

    /// Collect the buffers of the chain starting at `head` into `out` (cleared first).
    /// Zero-length descriptors carry no data and are skipped.
    pub fn read_chain(
        &self,
        mem: &GuestMemoryMmap,
        head: u16,
        out: &mut Vec<Segment>,
    ) -> Result<(), ChainError> {
        out.clear();
        let mut table = self.layout.desc;
        let mut table_len = u32::from(self.layout.size);
        let mut index = u32::from(head);
        let mut in_indirect = false;
        let mut seen_writable = false;
        // One read per buffer: at most a queue's worth in the ring's table; in an indirect
        // table (which may hold more entries than the queue size: Linux puts seg_max + 2
        // there, whatever the queue size a vhost-user frontend chose) at most its length,
        // capped as QEMU caps it.
        let mut budget = u32::from(self.layout.size);
        loop {
            if budget == 0 {
                return Err(ChainError::TooLong);
            }
            budget -= 1;
            let mut raw = [0u8; 16];
            mem.read_slice(&mut raw, GuestAddress(table + u64::from(index) * DESC_SIZE))
                .map_err(|_| ChainError::TableUnreadable)?;
            let addr = u64::from_le_bytes([
                raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
            ]);
            let len = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
            let flags = u16::from_le_bytes([raw[12], raw[13]]);
            let next = u16::from_le_bytes([raw[14], raw[15]]);

            if flags & DESC_F_INDIRECT != 0 {
                if !self.indirect {
                    return Err(ChainError::IndirectNotNegotiated);
                }
                if in_indirect || flags & DESC_F_NEXT != 0 {
                    return Err(ChainError::BadIndirect);
                }
                if len == 0 || u64::from(len) % DESC_SIZE != 0 {
                    return Err(ChainError::BadIndirectLength(len));
                }
                if addr % DESC_SIZE != 0 || !mem.check_range(GuestAddress(addr), len as usize) {
                    return Err(ChainError::BufferOutOfMemory { addr, len });
                }
                table = addr;
                table_len = len / DESC_SIZE as u32;
                budget = table_len.min(MAX_INDIRECT_CHAIN);
                index = 0;
                in_indirect = true;
                continue;
            }

            let writable = flags & DESC_F_WRITE != 0;
            if !writable && seen_writable {
                return Err(ChainError::ReadableAfterWritable);
            }
            seen_writable |= writable;
            if len > 0 {
                if !mem.check_range(GuestAddress(addr), len as usize) {
                    return Err(ChainError::BufferOutOfMemory { addr, len });
                }
                out.push(Segment {
                    addr: GuestAddress(addr),
                    len,
                    writable,
                });
            }
            if flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            if u32::from(next) >= table_len {
                return Err(ChainError::BadNext(next));
            }
            index = u32::from(next);
        }
    }

    /// Return chain `head` to the driver with `len` bytes written into its buffers.
    pub fn add_used(
        &mut self,
        mem: &GuestMemoryMmap,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        let slot = u64::from(self.next_used % self.layout.size);
        let mut elem = [0u8; 8];
        elem[0..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..8].copy_from_slice(&len.to_le_bytes());
        let elem_addr = self.used_addr(4 + 8 * slot);
        mem.write_slice(&elem, elem_addr)?;
        dirty_log::mark(elem_addr.0, 8);
        self.next_used = self.next_used.wrapping_add(1);
        mem.store(self.next_used, self.used_addr(2), Ordering::Release)?;
        dirty_log::mark(self.used_addr(2).0, 2);
        Ok(())
    }

    /// Whether the driver wants an interrupt for the used entries added since the last call
    /// (VIRTIO_F_EVENT_IDX's used_event, or the avail ring's NO_INTERRUPT flag).
    pub fn needs_notification(&mut self, mem: &GuestMemoryMmap) -> Result<bool, QueueError> {
        fence(Ordering::SeqCst);
        let old = self.signalled_used;
        let new = self.next_used;
        self.signalled_used = new;
        if old == new {
            return Ok(false);
        }
        if self.event_idx {
            let used_event: u16 = mem.load(
                self.avail_addr(4 + 2 * u64::from(self.layout.size)),
                Ordering::Acquire,
            )?;
            Ok(new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old))
        } else {
            let flags: u16 = mem.load(self.avail_addr(0), Ordering::Acquire)?;
            Ok(flags & AVAIL_F_NO_INTERRUPT == 0)
        }
    }

    /// Ask the driver for a kick on the next request (VIRTIO_F_EVENT_IDX's avail_event)
    /// and report whether requests arrived meanwhile, in which case the caller must keep
    /// processing instead of waiting for a kick.
    pub fn enable_notification(&mut self, mem: &GuestMemoryMmap) -> Result<bool, QueueError> {
        if self.event_idx {
            let avail_event = self.used_addr(4 + 8 * u64::from(self.layout.size));
            mem.store(self.next_avail, avail_event, Ordering::Release)?;
            dirty_log::mark(avail_event.0, 2);
        }
        fence(Ordering::SeqCst);
        Ok(self.pending(mem)? != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn layout(size: u16) -> QueueLayout {
        QueueLayout {
            size,
            desc: DESC,
            avail: AVAIL,
            used: USED,
        }
    }

    fn desc(mem: &GuestMemoryMmap, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&raw, GuestAddress(table + 16 * u64::from(i)))
            .unwrap();
    }

    fn offer(mem: &GuestMemoryMmap, slot: u16, head: u16, idx: u16) {
        mem.write_obj(head, GuestAddress(AVAIL + 4 + 2 * u64::from(slot)))
            .unwrap();
        mem.write_obj(idx, GuestAddress(AVAIL + 2)).unwrap();
    }

    #[test]
    fn layout_validation() {
        let m = mem();
        assert!(matches!(
            Queue::new(&m, layout(3), false, false),
            Err(QueueError::InvalidSize(3))
        ));
        assert!(matches!(
            Queue::new(&m, layout(0), false, false),
            Err(QueueError::InvalidSize(0))
        ));
        let bad = QueueLayout {
            desc: 0x1008,
            ..layout(8)
        };
        assert!(matches!(
            Queue::new(&m, bad, false, false),
            Err(QueueError::Misaligned { .. })
        ));
        let outside = QueueLayout {
            used: 0xfff0,
            ..layout(8)
        };
        assert!(matches!(
            Queue::new(&m, outside, false, false),
            Err(QueueError::OutOfMemory { .. })
        ));
        assert!(Queue::new(&m, layout(8), false, false).is_ok());
    }

    #[test]
    fn pop_chain_and_complete() {
        let m = mem();
        let mut q = Queue::new(&m, layout(8), false, false).unwrap();
        desc(&m, DESC, 0, 0x4000, 16, DESC_F_NEXT, 1);
        desc(&m, DESC, 1, 0x5000, 0, DESC_F_NEXT, 2);
        desc(&m, DESC, 2, 0x6000, 1, DESC_F_WRITE, 0);
        assert_eq!(q.pop(&m).unwrap(), None);
        offer(&m, 0, 0, 1);
        let head = q.pop(&m).unwrap().unwrap();
        let mut segs = Vec::new();
        q.read_chain(&m, head, &mut segs).unwrap();
        assert_eq!(segs.len(), 2);
        assert!(!segs[0].writable && segs[1].writable);
        q.add_used(&m, head, 1).unwrap();
        assert_eq!(m.read_obj::<u16>(GuestAddress(USED + 2)).unwrap(), 1);
        assert_eq!(m.read_obj::<u32>(GuestAddress(USED + 8)).unwrap(), 1);
        assert!(q.needs_notification(&m).unwrap());
        assert!(!q.needs_notification(&m).unwrap());
    }

    #[test]
    fn loops_and_bad_links_are_errors() {
        let m = mem();
        let q = Queue::new(&m, layout(4), false, true).unwrap();
        let mut segs = Vec::new();
        desc(&m, DESC, 0, 0x4000, 8, DESC_F_NEXT, 1);
        desc(&m, DESC, 1, 0x4000, 8, DESC_F_NEXT, 0);
        assert_eq!(q.read_chain(&m, 0, &mut segs), Err(ChainError::TooLong));
        desc(&m, DESC, 1, 0x4000, 8, DESC_F_NEXT, 9);
        assert_eq!(q.read_chain(&m, 0, &mut segs), Err(ChainError::BadNext(9)));
        desc(&m, DESC, 1, 0xfff0, 0x20, 0, 0);
        assert!(matches!(
            q.read_chain(&m, 0, &mut segs),
            Err(ChainError::BufferOutOfMemory { .. })
        ));
        desc(&m, DESC, 0, 0x4000, 8, DESC_F_WRITE | DESC_F_NEXT, 1);
        desc(&m, DESC, 1, 0x4000, 8, 0, 0);
        assert_eq!(
            q.read_chain(&m, 0, &mut segs),
            Err(ChainError::ReadableAfterWritable)
        );
    }

    #[test]
    fn indirect_tables() {
        let m = mem();
        let q = Queue::new(&m, layout(4), false, true).unwrap();
        let mut segs = Vec::new();
        desc(&m, 0x8000, 0, 0x4000, 16, DESC_F_NEXT, 1);
        desc(&m, 0x8000, 1, 0x5000, 1, DESC_F_WRITE, 0);
        desc(&m, DESC, 0, 0x8000, 32, DESC_F_INDIRECT, 0);
        q.read_chain(&m, 0, &mut segs).unwrap();
        assert_eq!(segs.len(), 2);
        desc(&m, DESC, 0, 0x8000, 24, DESC_F_INDIRECT, 0);
        assert_eq!(
            q.read_chain(&m, 0, &mut segs),
            Err(ChainError::BadIndirectLength(24))
        );
        desc(&m, DESC, 0, 0x8000, 0, DESC_F_INDIRECT, 0);
        assert_eq!(
            q.read_chain(&m, 0, &mut segs),
            Err(ChainError::BadIndirectLength(0))
        );
        desc(&m, DESC, 0, 0x8000, 32, DESC_F_INDIRECT | DESC_F_NEXT, 1);
        assert_eq!(q.read_chain(&m, 0, &mut segs), Err(ChainError::BadIndirect));
        desc(&m, 0x8000, 1, 0x8000, 32, DESC_F_INDIRECT, 0);
        desc(&m, DESC, 0, 0x8000, 32, DESC_F_INDIRECT, 0);
        assert_eq!(q.read_chain(&m, 0, &mut segs), Err(ChainError::BadIndirect));
        // A self-linking indirect table is bounded too.
        desc(&m, 0x8000, 0, 0x4000, 16, DESC_F_NEXT, 1);
        desc(&m, 0x8000, 1, 0x4000, 16, DESC_F_NEXT, 0);
        assert_eq!(q.read_chain(&m, 0, &mut segs), Err(ChainError::TooLong));
        // An indirect table longer than the queue (130 entries for a queue of 4).
        for i in 0..130u16 {
            let (flags, next) = if i == 129 {
                (DESC_F_WRITE, 0)
            } else {
                (DESC_F_NEXT, i + 1)
            };
            desc(&m, 0x8000, i, 0x4000 + 16 * u64::from(i), 16, flags, next);
        }
        desc(&m, DESC, 0, 0x8000, 130 * 16, DESC_F_INDIRECT, 0);
        q.read_chain(&m, 0, &mut segs).unwrap();
        assert_eq!(segs.len(), 130);
        let plain = Queue::new(&m, layout(4), false, false).unwrap();
        assert_eq!(
            plain.read_chain(&m, 0, &mut segs),
            Err(ChainError::IndirectNotNegotiated)
        );
    }

    #[test]
    fn avail_index_jump_and_bad_head() {
        let m = mem();
        let mut q = Queue::new(&m, layout(4), false, false).unwrap();
        m.write_obj(5u16, GuestAddress(AVAIL + 2)).unwrap();
        assert!(matches!(q.pop(&m), Err(QueueError::AvailIndexJump { .. })));
        offer(&m, 0, 7, 1);
        assert!(matches!(
            q.pop(&m),
            Err(QueueError::BadHead { head: 7, .. })
        ));
    }

    #[test]
    fn resume_continues_both_rings() {
        let m = mem();
        m.write_obj(5u16, GuestAddress(USED + 2)).unwrap();
        desc(&m, DESC, 0, 0x4000, 1, DESC_F_WRITE, 0);
        offer(&m, 7, 0, 8); // ring slot 7 (index 7 of an 8-entry ring)
        let mut q = Queue::resume(&m, layout(8), false, false, 7).unwrap();
        assert_eq!(q.next_avail(), 7);
        let head = q.pop(&m).unwrap().unwrap();
        assert_eq!(q.pop(&m).unwrap(), None);
        q.add_used(&m, head, 1).unwrap();
        assert_eq!(m.read_obj::<u16>(GuestAddress(USED + 2)).unwrap(), 6);
        // The used element went to slot 5 (where the ring stood), not slot 0.
        assert_eq!(
            m.read_obj::<u32>(GuestAddress(USED + 4 + 8 * 5 + 4))
                .unwrap(),
            1
        );
        assert_eq!(q.next_avail(), 8);
    }

    #[test]
    fn event_idx_suppression() {
        let m = mem();
        let mut q = Queue::new(&m, layout(4), true, false).unwrap();
        desc(&m, DESC, 0, 0x4000, 1, DESC_F_WRITE, 0);
        // used_event = 1: the driver wants an interrupt once entry #1 (the second) is used.
        m.write_obj(1u16, GuestAddress(AVAIL + 4 + 8)).unwrap();
        offer(&m, 0, 0, 1);
        offer(&m, 1, 0, 2);
        let h = q.pop(&m).unwrap().unwrap();
        q.add_used(&m, h, 1).unwrap();
        assert!(!q.needs_notification(&m).unwrap());
        let h = q.pop(&m).unwrap().unwrap();
        q.add_used(&m, h, 1).unwrap();
        assert!(q.needs_notification(&m).unwrap());
        assert!(!q.enable_notification(&m).unwrap());
        assert_eq!(m.read_obj::<u16>(GuestAddress(USED + 4 + 32)).unwrap(), 2);
    }
}
