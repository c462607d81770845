//! The smoltcp device of vessel's in-VMM network stacks (the MMDS endpoint here, `net`'s
//! run-time forward relay): queues of whole Ethernet frames, bounded both ways, with the
//! guest's frames checked on the way in. Frames to the guest get full checksums; frames
//! from it are not verified (a virtual wire: offloads leave partial checksums).

use std::collections::VecDeque;

use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// The stacks send Ethernet-sized frames (every guest driver takes them).
pub const MTU: usize = 1514;
const ETH_HEADER: usize = 14;

/// Whether `frame` is IPv4 from 0.0.0.0. smoltcp lets such packets through (DHCP clients
/// send them) and a listening TCP socket answers their SYN, which trips an `assert!` in
/// smoltcp 0.12's dispatch (a reply to the unspecified address): a panic any guest could
/// cause. No TCP peer of ours has that address, so [`FrameWire`] drops these frames.
pub fn from_unspecified_ipv4(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&[0x08, 0x00][..])
        && frame.get(ETH_HEADER + 12..ETH_HEADER + 16) == Some(&[0u8; 4][..])
}

pub struct FrameWire {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
    /// Frames waiting either way; smoltcp keeps the rest of its data in its sockets.
    max_queued: usize,
    /// The largest frame taken from the guest.
    max_in_frame: usize,
}

impl FrameWire {
    pub fn new(max_queued: usize, max_in_frame: usize) -> Self {
        Self {
            incoming: VecDeque::new(),
            outgoing: VecDeque::new(),
            max_queued,
            max_in_frame,
        }
    }

    /// Queues the guest's `frame` for smoltcp, with `fix` applied to the copy; false when
    /// it is dropped (shorter than an Ethernet header, too long, from 0.0.0.0, queue full).
    pub fn push_from_guest(&mut self, frame: &[u8], fix: impl FnOnce(&mut [u8])) -> bool {
        if !(ETH_HEADER..=self.max_in_frame).contains(&frame.len())
            || from_unspecified_ipv4(frame)
            || self.incoming.len() >= self.max_queued
        {
            return false;
        }
        let mut frame = frame.to_vec();
        fix(&mut frame);
        self.incoming.push_back(frame);
        true
    }

    /// Whether frames wait for the guest.
    pub fn has_output(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// The next frame for the guest, copied into `buf`; frames longer than `buf` are dropped.
    pub fn pop_to_guest(&mut self, buf: &mut [u8]) -> Option<usize> {
        while let Some(frame) = self.outgoing.pop_front() {
            if let Some(dst) = buf.get_mut(..frame.len()) {
                dst.copy_from_slice(&frame);
                return Some(frame.len());
            }
        }
        None
    }
}

pub struct InToken(Vec<u8>);
pub struct OutToken<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
    max_queued: usize,
}

impl smoltcp::phy::RxToken for InToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for OutToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        if self.queue.len() < self.max_queued {
            self.queue.push_back(frame);
        }
        r
    }
}

impl Device for FrameWire {
    type RxToken<'a> = InToken;
    type TxToken<'a> = OutToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(InToken, OutToken<'_>)> {
        if self.outgoing.len() >= self.max_queued {
            // No room for an answer: leave the frame until the guest took some.
            return None;
        }
        let frame = self.incoming.pop_front()?;
        let out = OutToken {
            queue: &mut self.outgoing,
            max_queued: self.max_queued,
        };
        Some((InToken(frame), out))
    }

    fn transmit(&mut self, _: Instant) -> Option<OutToken<'_>> {
        (self.outgoing.len() < self.max_queued).then_some(OutToken {
            queue: &mut self.outgoing,
            max_queued: self.max_queued,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        let mut checksum = ChecksumCapabilities::default();
        checksum.ipv4 = Checksum::Tx;
        checksum.tcp = Checksum::Tx;
        checksum.icmpv4 = Checksum::Tx;
        caps.checksum = checksum;
        caps
    }
}

#[cfg(test)]
mod tests {
    use smoltcp::phy::{RxToken, TxToken};

    use super::*;

    fn ipv4_frame(src: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 34];
        f[12..14].copy_from_slice(&[8, 0]);
        f[14] = 0x45;
        f[26..30].copy_from_slice(&src);
        f
    }

    #[test]
    fn guest_frames_are_checked_and_bounded() {
        let mut wire = FrameWire::new(2, 100);
        assert!(!wire.push_from_guest(&[0; 13], |_| {}));
        assert!(!wire.push_from_guest(&[0; 101], |_| {}));
        assert!(!wire.push_from_guest(&ipv4_frame([0; 4]), |_| {}));
        assert!(wire.push_from_guest(&ipv4_frame([10, 0, 2, 15]), |f| f[0] = 7));
        assert!(wire.push_from_guest(&[0; 14], |_| {}));
        assert!(!wire.push_from_guest(&[0; 14], |_| {}), "the queue is full");
        let (rx, _) = wire.receive(Instant::ZERO).unwrap();
        assert_eq!(
            rx.consume(|f| f[0]),
            7,
            "the fix applies to the queued copy"
        );
    }

    #[test]
    fn output_is_bounded_and_too_long_frames_are_dropped() {
        let mut wire = FrameWire::new(2, 100);
        for len in [60, 30, 20] {
            if let Some(tx) = wire.transmit(Instant::ZERO) {
                tx.consume(len, |f| f.fill(len as u8));
            }
        }
        assert!(wire.transmit(Instant::ZERO).is_none(), "two frames queued");
        assert!(
            wire.receive(Instant::ZERO).is_none(),
            "no room for an answer"
        );
        let mut buf = [0u8; 40];
        assert_eq!(wire.pop_to_guest(&mut buf), Some(30), "60 does not fit");
        assert!(!wire.has_output());
    }
}
