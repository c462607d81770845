//! virtio-net (virtio 1.2 §5.1), one queue pair, no control queue, no offloads: frames go
//! to and come from a [`NetBackend`] (tap, user-mode NAT, a switch port...).
//!
//! * Receive: frames the backend has are written into the guest's receive buffers with a
//!   12-byte `virtio_net_hdr` in front. With VIRTIO_NET_F_MRG_RXBUF a frame spreads over as
//!   many buffers as it needs (`num_buffers`); without it, a frame must fit one buffer.
//!   Buffers taken from the ring but not filled yet are kept for the next frame, so a
//!   frame that does not fit yet waits for more buffers instead of being dropped.
//! * Transmit: the header is read and the frame handed to the backend. A backend that is
//!   full keeps the frame back; transmit resumes when the backend's fd is writable again.
//! * Offloads, when the backend carries a virtio-net header with each frame (a tap with
//!   IFF_VNET_HDR, [`NetBackend::offloads`]): checksum offload and TSO both ways
//!   (CSUM, HOST_TSO4/6, HOST_ECN; GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN). The header of a
//!   transmitted frame is checked against what was negotiated before it reaches the
//!   backend; the offloads the guest accepts are passed to the backend on activation.
//!   Backends without a header (passt's socket, the switch) get none of it.
//! * Link status: VIRTIO_NET_F_STATUS with the link up; [`LinkHandle`] changes it.
//! * MTU: a backend that carries frames larger than Ethernet's (passt: 65520) says so
//!   ([`NetBackend::mtu`]); the device then offers VIRTIO_NET_F_MTU with it, and the
//!   guest sends and receives frames of that size — far fewer frames for bulk transfers.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS,
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_S_LINK_UP,
};
use vm_memory::GuestMemoryMmap;

use crate::chain_io::{split, ChainReader, ChainWriter};
use crate::device::VirtioDevice;
use crate::queue::{Queue, QueueError, Segment};
use crate::rate_limiter::RateLimiterHandle;

mod announce;
mod datagram;
pub use datagram::DatagramBackend;
mod persist;
pub use persist::{NetArgs, NetState, NET_STATE_VERSION};

/// Queue indices: receiveq1 (host → guest) and transmitq1 (guest → host).
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
pub const QUEUE_SIZE: u16 = 256;
/// `struct virtio_net_hdr` with VIRTIO_F_VERSION_1 (num_buffers always present).
pub const NET_HDR_LEN: usize = 12;
/// Largest frame carried either way (Ethernet header included); bigger ones are dropped.
pub const MAX_FRAME_LEN: usize = 65_550;
/// Smallest frame passed on: an Ethernet header.
pub const MIN_FRAME_LEN: usize = 14;
/// Frames moved per call and direction before yielding to the I/O thread.
const BUDGET: u32 = 256;
/// mac, status, max_virtqueue_pairs, mtu.
const CONFIG_LEN: usize = 12;
/// The largest MTU a backend may ask for (its frames, with the Ethernet header, fit
/// [`MAX_FRAME_LEN`]).
pub const MAX_MTU: u16 = u16::MAX;
const _: () = assert!(MAX_MTU as usize + MIN_FRAME_LEN <= MAX_FRAME_LEN);
pub(crate) const DEVICE_TYPE_NET: u16 = 1;

pub const F_MAC: u64 = 1 << VIRTIO_NET_F_MAC;
pub const F_STATUS: u64 = 1 << VIRTIO_NET_F_STATUS;
pub const F_MRG_RXBUF: u64 = 1 << VIRTIO_NET_F_MRG_RXBUF;
pub const F_MTU: u64 = 1 << VIRTIO_NET_F_MTU;
pub const F_CSUM: u64 = 1 << VIRTIO_NET_F_CSUM;
pub const F_GUEST_CSUM: u64 = 1 << VIRTIO_NET_F_GUEST_CSUM;
pub const F_GUEST_TSO4: u64 = 1 << VIRTIO_NET_F_GUEST_TSO4;
pub const F_GUEST_TSO6: u64 = 1 << VIRTIO_NET_F_GUEST_TSO6;
pub const F_GUEST_ECN: u64 = 1 << VIRTIO_NET_F_GUEST_ECN;
pub const F_HOST_TSO4: u64 = 1 << VIRTIO_NET_F_HOST_TSO4;
pub const F_HOST_TSO6: u64 = 1 << VIRTIO_NET_F_HOST_TSO6;
pub const F_HOST_ECN: u64 = 1 << VIRTIO_NET_F_HOST_ECN;
/// What a backend with a virtio-net header lets the device offer.
pub const OFFLOAD_FEATURES: u64 = F_CSUM
    | F_GUEST_CSUM
    | F_GUEST_TSO4
    | F_GUEST_TSO6
    | F_GUEST_ECN
    | F_HOST_TSO4
    | F_HOST_TSO6
    | F_HOST_ECN;

/// Offloads the guest accepts on receive: what a backend may leave undone in the frames
/// it hands over (partial checksums, TCP segments larger than the MTU).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GuestOffloads {
    pub csum: bool,
    pub tso4: bool,
    pub tso6: bool,
    pub ecn: bool,
}

impl GuestOffloads {
    pub fn from_features(features: u64) -> Self {
        Self {
            csum: features & F_GUEST_CSUM != 0,
            tso4: features & F_GUEST_TSO4 != 0,
            tso6: features & F_GUEST_TSO6 != 0,
            ecn: features & F_GUEST_ECN != 0,
        }
    }
}

/// Where a NIC's frames go: the host side of the wire. Frames are whole Ethernet frames
/// without any virtio header. Called from the VMM's I/O thread only.
pub trait NetBackend: Send {
    /// Take the next frame into `buf` (at least [`MAX_FRAME_LEN`] long) and return its
    /// length; `Ok(None)` when none is pending now. A frame longer than `buf` is dropped.
    /// A backend may read several frames at once and hold them: its fd reports readable
    /// again only once `recv` returned `Ok(None)`, so callers drain it (or call again
    /// without waiting, as the device does through its queue re-kick).
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    /// Pass one frame on. `Ok(false)`: the backend cannot take it now (retry when
    /// [`Self::as_raw_fd`] is writable); the frame was not consumed.
    fn send(&mut self, frame: &[u8]) -> io::Result<bool>;
    /// Push out anything the backend buffered; `Ok(false)` while some is still left
    /// (transmit waits for the fd to be writable). Called before each transmit run.
    fn flush(&mut self) -> io::Result<bool> {
        Ok(true)
    }
    /// The fd that is readable when [`Self::recv`] may have a frame and writable when a
    /// refused [`Self::send`] may succeed: the I/O thread polls it.
    fn as_raw_fd(&self) -> RawFd;
    /// The MTU the other end of the wire works with, when it is not Ethernet's 1500
    /// (offered to the guest as VIRTIO_NET_F_MTU).
    fn mtu(&self) -> Option<u16> {
        None
    }
    /// Whether frames carry a 12-byte `virtio_net_hdr_v1` both ways (checksum and
    /// segmentation offloads); then the device uses [`Self::recv_with_header`] and
    /// [`Self::send_with_header`].
    fn offloads(&self) -> bool {
        false
    }
    /// [`Self::recv`], with the frame's virtio-net header in `header` (zeroed by default).
    fn recv_with_header(
        &mut self,
        header: &mut [u8; NET_HDR_LEN],
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        header.fill(0);
        self.recv(buf)
    }
    /// [`Self::send`], with the frame's (checked) virtio-net header.
    fn send_with_header(&mut self, _header: &[u8; NET_HDR_LEN], frame: &[u8]) -> io::Result<bool> {
        self.send(frame)
    }
    /// The guest (re)negotiated: these are the offloads it accepts on receive.
    fn set_guest_offloads(&mut self, _offloads: GuestOffloads) -> io::Result<()> {
        Ok(())
    }
}

/// Whether a transmitted frame's header asks only for what the driver negotiated:
/// NEEDS_CSUM with CSUM and a checksum field inside the frame, TCP segmentation with
/// HOST_TSO4/6 (ECN with HOST_ECN) and a non-zero segment size.
fn tx_header_allowed(header: &[u8; NET_HDR_LEN], features: u64, frame_len: usize) -> bool {
    let flags = u32::from(header[0]);
    let gso = u32::from(header[1]);
    let gso_size = u16::from_le_bytes([header[4], header[5]]);
    let csum_start = usize::from(u16::from_le_bytes([header[6], header[7]]));
    let csum_offset = usize::from(u16::from_le_bytes([header[8], header[9]]));
    if flags & !VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        return false;
    }
    if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
        && (features & F_CSUM == 0 || csum_start + csum_offset + 2 > frame_len)
    {
        return false;
    }
    if gso & VIRTIO_NET_HDR_GSO_ECN != 0 && features & F_HOST_ECN == 0 {
        return false;
    }
    match gso & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_NONE => gso & VIRTIO_NET_HDR_GSO_ECN == 0,
        VIRTIO_NET_HDR_GSO_TCPV4 => features & F_HOST_TSO4 != 0 && gso_size > 0,
        VIRTIO_NET_HDR_GSO_TCPV6 => features & F_HOST_TSO6 != 0 && gso_size > 0,
        _ => false,
    }
}

/// Whether a received frame's header only uses what the guest accepts; DATA_VALID is
/// cleared for a guest without GUEST_CSUM.
fn rx_header_allowed(header: &mut [u8; NET_HDR_LEN], features: u64) -> bool {
    let offloads = GuestOffloads::from_features(features);
    let flags = u32::from(header[0]);
    if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 && !offloads.csum {
        return false;
    }
    if !offloads.csum {
        header[0] &= !(VIRTIO_NET_HDR_F_DATA_VALID as u8);
    }
    let gso = u32::from(header[1]);
    if gso & VIRTIO_NET_HDR_GSO_ECN != 0 && !offloads.ecn {
        return false;
    }
    match gso & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_NONE => true,
        VIRTIO_NET_HDR_GSO_TCPV4 => offloads.tso4,
        VIRTIO_NET_HDR_GSO_TCPV6 => offloads.tso6,
        _ => false,
    }
}

/// Counters of frames the device could not carry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames too large for the guest's buffer (without MRG_RXBUF) or for the device.
    pub rx_dropped: u64,
    /// Malformed transmit chains and frames the backend refused with an error.
    pub tx_dropped: u64,
}

/// Changes the link status the guest sees; after [`LinkHandle::set_up`] the VMM calls
/// `QueueProcessor::signal_config_change()`.
#[derive(Clone)]
pub struct LinkHandle(Arc<AtomicBool>);

impl LinkHandle {
    pub fn set_up(&self, up: bool) {
        self.0.store(up, Ordering::SeqCst);
    }
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A receive chain taken from the ring and not used yet.
struct RxChain {
    head: u16,
    segs: Vec<Segment>,
    capacity: u64,
}

/// A virtio network device over a backend.
pub struct Net {
    backend: Box<dyn NetBackend>,
    mac: [u8; 6],
    link: Arc<AtomicBool>,
    queue_sizes: [u16; 2],
    mrg_rxbuf: bool,
    /// Features the driver negotiated (0 before activation).
    features: u64,
    /// The virtio-net header of the frame in `rx_frame` / `tx_frame`.
    rx_header: [u8; NET_HDR_LEN],
    tx_header: [u8; NET_HDR_LEN],
    /// A received frame waiting for receive buffers (`rx_len` bytes of `rx_frame`).
    rx_frame: Vec<u8>,
    rx_len: Option<usize>,
    rx_chains: VecDeque<RxChain>,
    /// Heads of receive chains a restored device had kept: read again from the ring
    /// before the next receive.
    restored_rx: Vec<u16>,
    /// A transmitted frame the backend refused for now.
    tx_frame: Vec<u8>,
    tx_stalled: bool,
    /// The frame in `tx_frame` waits for `tx_limiter`, not for the backend.
    tx_throttled: bool,
    segs: Vec<Segment>,
    stats: NetStats,
    /// Frames to the guest wait (in the backend) while it is short.
    rx_limiter: Option<RateLimiterHandle>,
    /// Frames from the guest wait (in `tx_frame`, then the ring) while it is short.
    tx_limiter: Option<RateLimiterHandle>,
}

impl Net {
    /// A NIC with address `mac` on `backend`, link up.
    pub fn new(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> (Self, LinkHandle) {
        let link = Arc::new(AtomicBool::new(true));
        let net = Self {
            backend,
            mac,
            link: link.clone(),
            queue_sizes: [QUEUE_SIZE; 2],
            mrg_rxbuf: false,
            features: 0,
            rx_header: [0; NET_HDR_LEN],
            tx_header: [0; NET_HDR_LEN],
            rx_frame: vec![0; MAX_FRAME_LEN],
            rx_len: None,
            rx_chains: VecDeque::new(),
            restored_rx: Vec::new(),
            tx_frame: Vec::with_capacity(MAX_FRAME_LEN),
            tx_stalled: false,
            tx_throttled: false,
            segs: Vec::new(),
            stats: NetStats::default(),
            rx_limiter: None,
            tx_limiter: None,
        };
        (net, LinkHandle(link))
    }

    /// Received and transmitted frames go through these limiters (one operation each,
    /// and the frame's bytes).
    pub fn with_rate_limiters(
        mut self,
        rx: Option<RateLimiterHandle>,
        tx: Option<RateLimiterHandle>,
    ) -> Self {
        self.rx_limiter = rx;
        self.tx_limiter = tx;
        self
    }

    /// Whether `limiter` (if any) lets a frame of `len` bytes through now.
    fn admit(limiter: &Option<RateLimiterHandle>, len: usize) -> bool {
        limiter.as_ref().is_none_or(|l| l.consume(len as u64))
    }

    /// The backend's fd, for the I/O thread's epoll (see [`NetBackend::as_raw_fd`]).
    pub fn backend_fd(&self) -> RawFd {
        self.backend.as_raw_fd()
    }

    /// The MTU offered to the guest: the backend's, if it has one of at least 1280.
    pub fn mtu(&self) -> Option<u16> {
        self.backend.mtu().filter(|m| *m >= 1280)
    }

    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Writable capacity of all kept receive chains.
    fn rx_capacity(&self) -> u64 {
        self.rx_chains.iter().map(|c| c.capacity).sum()
    }

    /// Take one more receive chain from the ring into `rx_chains`. Returns false when
    /// the ring is empty. Malformed chains (unreadable, or with device-readable buffers)
    /// go back to the driver unused.
    fn take_rx_chain(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        loop {
            let Some(head) = queue.pop(mem)? else {
                return Ok(false);
            };
            let mut segs = Vec::new();
            let usable = queue.read_chain(mem, head, &mut segs).is_ok() && {
                let (readable, writable) = split(&segs);
                readable.is_empty() && !writable.is_empty()
            };
            if !usable {
                queue.add_used(mem, head, 0)?;
                continue;
            }
            let capacity = segs.iter().map(|s| u64::from(s.len)).sum();
            self.rx_chains.push_back(RxChain {
                head,
                segs,
                capacity,
            });
            return Ok(true);
        }
    }

    /// Keep enough chains to hold `needed` bytes (one chain without MRG_RXBUF), or a
    /// whole ring's worth. Returns false when the ring ran dry first (a kick is requested).
    fn gather_rx_chains(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        needed: u64,
    ) -> Result<bool, QueueError> {
        loop {
            let enough = if self.mrg_rxbuf {
                self.rx_capacity() >= needed
            } else {
                !self.rx_chains.is_empty()
            };
            if enough || self.rx_chains.len() >= usize::from(queue.size()) {
                return Ok(true);
            }
            if !self.take_rx_chain(queue, mem)? {
                // Ask for a kick when buffers arrive; go on if some already did.
                if !queue.enable_notification(mem)? {
                    return Ok(false);
                }
            }
        }
    }

    /// Write the pending frame with its header into the kept chains and return them.
    fn deliver(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        len: usize,
    ) -> Result<(), QueueError> {
        let total = (NET_HDR_LEN + len) as u64;
        let mut chains = 0usize;
        let mut room = 0u64;
        for c in &self.rx_chains {
            chains += 1;
            room += c.capacity;
            if room >= total {
                break;
            }
        }
        let mut header = self.rx_header;
        header[10..12].copy_from_slice(&(chains as u16).to_le_bytes());
        let mut parts: [&[u8]; 2] = [&header, &self.rx_frame[..len]];
        for _ in 0..chains {
            let Some(chain) = self.rx_chains.pop_front() else {
                break;
            };
            let mut writer = ChainWriter::new(mem, &chain.segs);
            for part in parts.iter_mut() {
                let n = (writer.remaining() as usize).min(part.len());
                // Segments were checked to lie in guest memory; a failed write still
                // returns the buffer.
                let _ = writer.write_all(&part[..n]);
                *part = &part[n..];
            }
            queue.add_used(mem, chain.head, writer.written() as u32)?;
        }
        Ok(())
    }

    fn receive(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, QueueError> {
        if !self.restored_rx.is_empty() {
            self.take_restored_chains(queue, mem)?;
        }
        for _ in 0..BUDGET {
            let len = match self.rx_len {
                Some(len) => len,
                None => match self
                    .backend
                    .recv_with_header(&mut self.rx_header, &mut self.rx_frame)
                {
                    Ok(Some(len))
                        if (MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&len)
                            && rx_header_allowed(&mut self.rx_header, self.features) =>
                    {
                        len
                    }
                    Ok(Some(_)) => {
                        self.stats.rx_dropped += 1;
                        continue;
                    }
                    // Nothing pending, or a backend error: wait for the fd.
                    Ok(None) | Err(_) => return Ok(false),
                },
            };
            self.rx_len = Some(len);
            let needed = (NET_HDR_LEN + len) as u64;
            if !self.gather_rx_chains(queue, mem, needed)? {
                return Ok(false);
            }
            let room = if self.mrg_rxbuf {
                self.rx_capacity()
            } else {
                self.rx_chains.front().map_or(0, |c| c.capacity)
            };
            if room < needed {
                // Too big for the guest's buffers: drop it, keep the buffers.
                self.stats.rx_dropped += 1;
                self.rx_len = None;
                continue;
            }
            if !Self::admit(&self.rx_limiter, len) {
                // Kept in `rx_frame`; the limiter's timer runs the queue again.
                return Ok(false);
            }
            self.deliver(queue, mem, len)?;
            self.rx_len = None;
            self.stats.rx_frames += 1;
        }
        Ok(true)
    }

    /// Read the frame of a transmit chain into `tx_frame`; false for a malformed chain.
    fn read_tx_chain(&mut self, mem: &GuestMemoryMmap) -> bool {
        let (readable, writable) = split(&self.segs);
        if !writable.is_empty() {
            return false;
        }
        let mut reader = ChainReader::new(mem, readable);
        let total = reader.remaining();
        if total < (NET_HDR_LEN + MIN_FRAME_LEN) as u64
            || total > (NET_HDR_LEN + MAX_FRAME_LEN) as u64
        {
            return false;
        }
        if reader.read_exact(&mut self.tx_header).is_err() {
            return false;
        }
        // num_buffers means nothing on transmit.
        self.tx_header[10..12].fill(0);
        self.tx_frame.resize(total as usize - NET_HDR_LEN, 0);
        reader.read_exact(&mut self.tx_frame).is_ok()
            && tx_header_allowed(&self.tx_header, self.features, self.tx_frame.len())
    }

    /// Hand `tx_frame` to the backend; false when the backend is full (frame kept).
    fn send_tx_frame(&mut self) -> bool {
        match self
            .backend
            .send_with_header(&self.tx_header, &self.tx_frame)
        {
            Ok(true) => {
                self.stats.tx_frames += 1;
                self.tx_stalled = false;
                true
            }
            Ok(false) => {
                self.tx_stalled = true;
                false
            }
            Err(_) => {
                self.stats.tx_dropped += 1;
                self.tx_stalled = false;
                true
            }
        }
    }

    fn transmit(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, QueueError> {
        if matches!(self.backend.flush(), Ok(false)) {
            return Ok(false);
        }
        if self.tx_throttled {
            if !Self::admit(&self.tx_limiter, self.tx_frame.len()) {
                return Ok(false);
            }
            self.tx_throttled = false;
        }
        if self.tx_stalled && !self.send_tx_frame() {
            return Ok(false);
        }
        let mut done = 0;
        loop {
            while let Some(head) = queue.pop(mem)? {
                let mut segs = std::mem::take(&mut self.segs);
                let ok = queue.read_chain(mem, head, &mut segs).is_ok();
                self.segs = segs;
                let frame = ok && self.read_tx_chain(mem);
                // The frame is copied out: the buffer goes back at once.
                queue.add_used(mem, head, 0)?;
                if !frame {
                    self.stats.tx_dropped += 1;
                } else if !Self::admit(&self.tx_limiter, self.tx_frame.len()) {
                    // Kept in `tx_frame`; the limiter's timer runs the queue again.
                    (self.tx_stalled, self.tx_throttled) = (true, true);
                    return Ok(false);
                } else if !self.send_tx_frame() {
                    // Resumed when the backend's fd turns writable.
                    return Ok(false);
                }
                done += 1;
                if done >= BUDGET {
                    return Ok(true);
                }
            }
            if !queue.enable_notification(mem)? {
                return Ok(false);
            }
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE_NET
    }
    fn pci_class(&self) -> (u8, u8) {
        (0x02, 0x00)
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        let mtu = if self.mtu().is_some() { F_MTU } else { 0 };
        let offloads = if self.backend.offloads() {
            OFFLOAD_FEATURES
        } else {
            0
        };
        F_MAC | F_STATUS | F_MRG_RXBUF | mtu | offloads
    }
    fn config_len(&self) -> usize {
        CONFIG_LEN
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; CONFIG_LEN];
        config[0..6].copy_from_slice(&self.mac);
        let status = if self.link.load(Ordering::SeqCst) {
            VIRTIO_NET_S_LINK_UP as u16
        } else {
            0
        };
        config[6..8].copy_from_slice(&status.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes()); // max_virtqueue_pairs
        config[10..12].copy_from_slice(&self.mtu().unwrap_or(1500).to_le_bytes());
        data.fill(0);
        let start = offset as usize;
        if let Some(src) = start
            .checked_add(data.len())
            .and_then(|end| config.get(start..end))
        {
            data.copy_from_slice(src);
        }
    }
    fn activate(&mut self, features: u64) {
        self.mrg_rxbuf = features & F_MRG_RXBUF != 0;
        self.features = features;
        if self.backend.offloads() {
            // A backend that cannot take the setting produces frames without offloads,
            // which every guest accepts.
            let _ = self
                .backend
                .set_guest_offloads(GuestOffloads::from_features(features));
        }
    }
    fn save_state(&self) -> crate::DeviceState {
        crate::DeviceState::Net(crate::Persist::save(self))
    }
    fn reset(&mut self) {
        // Kept chains belonged to the old rings; a frame in flight is lost, as on a wire.
        self.rx_chains.clear();
        self.restored_rx.clear();
        self.rx_len = None;
        self.tx_stalled = false;
        self.tx_throttled = false;
        self.mrg_rxbuf = false;
        self.features = 0;
        if self.backend.offloads() {
            let _ = self.backend.set_guest_offloads(GuestOffloads::default());
        }
    }
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        match index {
            RX_QUEUE => self.receive(queue, mem),
            TX_QUEUE => self.transmit(queue, mem),
            _ => Ok(false),
        }
    }
}
