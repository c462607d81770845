//! The relay's smoltcp device: queues of whole Ethernet frames, bounded both ways.

use std::collections::VecDeque;

use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Frames waiting either way; smoltcp keeps the rest of its data in its sockets.
pub(crate) const MAX_QUEUED_FRAMES: usize = 512;
/// The relay sends Ethernet-sized frames (every guest driver takes them).
pub(crate) const MTU: usize = 1514;

#[derive(Default)]
pub(crate) struct Wire {
    pub incoming: VecDeque<Vec<u8>>,
    pub outgoing: VecDeque<Vec<u8>>,
}

pub(crate) struct InToken(Vec<u8>);
pub(crate) struct OutToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl smoltcp::phy::RxToken for InToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for OutToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        if self.0.len() < MAX_QUEUED_FRAMES {
            self.0.push_back(frame);
        }
        r
    }
}

impl Device for Wire {
    type RxToken<'a> = InToken;
    type TxToken<'a> = OutToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(InToken, OutToken<'_>)> {
        if self.outgoing.len() >= MAX_QUEUED_FRAMES {
            // No room for an answer: leave the frame until the guest took some.
            return None;
        }
        let frame = self.incoming.pop_front()?;
        Some((InToken(frame), OutToken(&mut self.outgoing)))
    }

    fn transmit(&mut self, _: Instant) -> Option<OutToken<'_>> {
        (self.outgoing.len() < MAX_QUEUED_FRAMES).then_some(OutToken(&mut self.outgoing))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        // Frames from the guest are not verified (a virtual wire); frames to it get full
        // checksums.
        let mut checksum = ChecksumCapabilities::default();
        checksum.ipv4 = Checksum::Tx;
        checksum.tcp = Checksum::Tx;
        checksum.icmpv4 = Checksum::Tx;
        caps.checksum = checksum;
        caps
    }
}
