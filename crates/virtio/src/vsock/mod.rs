//! virtio-vsock (virtio 1.2 §5.10) with Firecracker's host side: guest `AF_VSOCK`
//! streams to the host (CID 2) become Unix stream connections, see [`muxer`].
//!
//! * Queues: receive (device → guest), transmit (guest → device), event. The event queue's
//!   buffers are kept unused except for one transport-reset event after a snapshot is
//!   restored ([`persist`]): host connections do not survive, and the guest is told so.
//! * Transmit: each chain is one packet, checked by [`packet::read_tx`] field by field
//!   before anything acts on it; a bad packet from the guest's own CID gets an RST, any
//!   other is dropped. Chains go back at once (their bytes are copied out).
//! * Receive: a packet (header, then for RW the payload) per chain; a chain too small for
//!   a header goes back empty. A chain taken when no packet was ready after all is kept for
//!   the next one.
//! * The VMM polls [`Vsock::backend_fd`] and runs all queues when it is readable; the
//!   transmit queue makes it readable when it leaves packets for the guest.

pub mod conn;
pub mod muxer;
pub mod packet;
pub mod persist;
pub mod uds;

use std::os::fd::RawFd;
use std::path::Path;

use vm_memory::GuestMemoryMmap;

use crate::chain_io::{split, ChainWriter};
use crate::device::VirtioDevice;
use crate::queue::{Queue, QueueError, Segment};

pub use muxer::{Muxer, MuxerError};
pub use packet::{Header, PacketError, HDR_LEN, HOST_CID, MAX_PAYLOAD};
pub use persist::{VsockArgs, VsockState, VSOCK_STATE_VERSION};

pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
pub const EVENT_QUEUE: usize = 2;
pub const QUEUE_SIZE: u16 = 256;
/// VIRTIO_VSOCK_F_STREAM.
pub const F_STREAM: u64 = 1;
pub const DEVICE_TYPE_VSOCK: u16 = 19;
/// Packets moved per call and direction before yielding to the I/O thread.
const BUDGET: u32 = 256;
/// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, the event's le32 id.
const EVENT_TRANSPORT_RESET: u32 = 0;

/// The lowest CID a guest may have (0-2 are the hypervisor, local and the host).
pub const MIN_GUEST_CID: u64 = 3;
/// The highest: CIDs are 32 bits (the upper half of the header fields is reserved) and
/// `u32::MAX` is VMADDR_CID_ANY.
pub const MAX_GUEST_CID: u64 = u32::MAX as u64 - 1;

/// Longest host socket path: a Unix socket path holds 107 bytes, and guest connections
/// to port P go to `<path>_P`, up to 11 bytes longer.
pub const MAX_UDS_PATH_LEN: usize = 107 - 11;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error(
        "guest CID {0} is out of range: it must be between {MIN_GUEST_CID} and {MAX_GUEST_CID}"
    )]
    Cid(u64),
    #[error(
        "guest CID {0} is out of range: it must be between {MIN_GUEST_CID} and {MAX_GUEST_CID}"
    )]
    NegativeCid(i64),
    #[error("socket path {path} is {len} bytes long: at most {MAX_UDS_PATH_LEN} (Unix socket paths hold 107 bytes and vessel appends _PORT)")]
    PathTooLong {
        path: std::path::PathBuf,
        len: usize,
    },
    #[error("the socket path is empty")]
    EmptyPath,
    #[error(transparent)]
    Muxer(#[from] MuxerError),
}

/// Counters of what the device refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VsockStats {
    pub tx_packets: u64,
    pub rx_packets: u64,
    /// Transmitted packets refused by [`packet::read_tx`] (answered with RST or dropped).
    pub tx_invalid: u64,
    /// Receive chains too small for a header.
    pub rx_unusable: u64,
}

/// Check a guest CID and host socket path before anything is created.
pub fn check_config(cid: u64, uds: &Path) -> Result<(), VsockError> {
    if !(MIN_GUEST_CID..=MAX_GUEST_CID).contains(&cid) {
        return Err(VsockError::Cid(cid));
    }
    let len = uds.as_os_str().len();
    if len == 0 {
        return Err(VsockError::EmptyPath);
    }
    if len > MAX_UDS_PATH_LEN {
        return Err(VsockError::PathTooLong {
            path: uds.to_path_buf(),
            len,
        });
    }
    Ok(())
}

struct RxChain {
    head: u16,
    segs: Vec<Segment>,
}

/// A vsock device for the guest with context ID `cid`.
pub struct Vsock {
    cid: u64,
    muxer: Muxer,
    queue_sizes: [u16; 3],
    segs: Vec<Segment>,
    held: Option<RxChain>,
    payload: Vec<u8>,
    stats: VsockStats,
    /// After a restore: the receive chain held when the snapshot was taken, to read again.
    restored_rx_head: Option<u16>,
    /// After a restore: the guest is still to be told that its connections are gone.
    reset_pending: bool,
}

impl Vsock {
    /// Check `cid` and listen at `uds` (see [`uds::bind_listener`]).
    pub fn new(cid: u64, uds: &Path) -> Result<Self, VsockError> {
        check_config(cid, uds)?;
        Ok(Self {
            cid,
            muxer: Muxer::new(uds, cid)?,
            queue_sizes: [QUEUE_SIZE; 3],
            segs: Vec::new(),
            held: None,
            payload: Vec::with_capacity(MAX_PAYLOAD as usize),
            stats: VsockStats::default(),
            restored_rx_head: None,
            reset_pending: false,
        })
    }

    /// How long a host client's `CONNECT P` waits for the guest to accept
    /// ([`muxer::CONNECT_TIMEOUT`] unless set).
    pub fn set_connect_timeout(&mut self, timeout: std::time::Duration) {
        self.muxer.set_connect_timeout(timeout);
    }

    /// The fd the I/O thread polls (the muxer's epoll set).
    pub fn backend_fd(&self) -> RawFd {
        self.muxer.epoll_fd()
    }

    pub fn stats(&self) -> VsockStats {
        self.stats
    }

    pub fn connections(&self) -> usize {
        self.muxer.connections()
    }

    fn transmit(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, QueueError> {
        let mut done = 0;
        let more = loop {
            let Some(head) = queue.pop(mem)? else {
                if queue.enable_notification(mem)? {
                    continue;
                }
                break false;
            };
            let chain_ok = queue.read_chain(mem, head, &mut self.segs).is_ok();
            queue.add_used(mem, head, 0)?;
            match chain_ok.then(|| packet::read_tx(mem, &self.segs, self.cid, &mut self.payload)) {
                Some(Ok(hdr)) => {
                    self.stats.tx_packets += 1;
                    self.muxer.from_guest(&hdr, &self.payload);
                }
                Some(Err((hdr, err))) => {
                    self.stats.tx_invalid += 1;
                    if err.deserves_rst(&hdr) {
                        self.muxer.refuse(&hdr);
                    }
                }
                None => self.stats.tx_invalid += 1,
            }
            done += 1;
            if done >= BUDGET {
                break true;
            }
        };
        if self.muxer.has_rx() {
            self.muxer.wake();
        }
        Ok(more)
    }

    /// The transport-reset event a restored device owes the guest, in the first event
    /// buffer that can hold it (others go back empty, which the driver ignores).
    fn send_reset(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, QueueError> {
        while self.reset_pending {
            let Some(head) = queue.pop(mem)? else {
                // The driver's next kick of the event queue brings a buffer.
                return Ok(false);
            };
            let mut segs = Vec::new();
            let usable = queue.read_chain(mem, head, &mut segs).is_ok() && {
                let (readable, writable) = split(&segs);
                readable.is_empty() && writable.iter().map(|s| u64::from(s.len)).sum::<u64>() >= 4
            };
            if !usable {
                queue.add_used(mem, head, 0)?;
                continue;
            }
            let mut writer = ChainWriter::new(mem, &segs);
            let _ = writer.write_all(&EVENT_TRANSPORT_RESET.to_le_bytes());
            queue.add_used(mem, head, writer.written() as u32)?;
            self.reset_pending = false;
        }
        Ok(false)
    }

    /// The receive chain a restored device held, read again from the restored queue.
    fn restored_rx_chain(&mut self, queue: &Queue, mem: &GuestMemoryMmap) -> Option<RxChain> {
        let head = self.restored_rx_head.take()?;
        let mut segs = Vec::new();
        queue.read_chain(mem, head, &mut segs).ok()?;
        let (readable, writable) = split(&segs);
        let room: u64 = writable.iter().map(|s| u64::from(s.len)).sum();
        (readable.is_empty() && room >= HDR_LEN as u64).then_some(RxChain { head, segs })
    }

    /// The next receive chain able to hold a header; chains too small go back empty.
    fn take_rx_chain(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<Option<RxChain>, QueueError> {
        while let Some(head) = queue.pop(mem)? {
            let mut segs = Vec::new();
            let usable = queue.read_chain(mem, head, &mut segs).is_ok() && {
                let (readable, writable) = split(&segs);
                let room: u64 = writable.iter().map(|s| u64::from(s.len)).sum();
                readable.is_empty() && room >= HDR_LEN as u64
            };
            if usable {
                return Ok(Some(RxChain { head, segs }));
            }
            self.stats.rx_unusable += 1;
            queue.add_used(mem, head, 0)?;
        }
        Ok(None)
    }

    fn receive(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, QueueError> {
        if let Some(head) = self.restored_rx_head {
            match self.restored_rx_chain(queue, mem) {
                Some(chain) => self.held = Some(chain),
                None => queue.add_used(mem, head, 0)?,
            }
        }
        self.muxer.poll_host();
        for _ in 0..BUDGET {
            let chain = match self.held.take() {
                Some(chain) => chain,
                None => {
                    if !self.muxer.has_rx() {
                        return Ok(false);
                    }
                    match self.take_rx_chain(queue, mem)? {
                        Some(chain) => chain,
                        // Ask for a kick when buffers arrive; go on if some already did.
                        None if queue.enable_notification(mem)? => continue,
                        None => return Ok(false),
                    }
                }
            };
            let room: u64 = chain.segs.iter().map(|s| u64::from(s.len)).sum();
            let max = (room - HDR_LEN as u64).min(u64::from(MAX_PAYLOAD)) as usize;
            self.payload.resize(max, 0);
            let Some(hdr) = self.muxer.next_rx(&mut self.payload) else {
                self.held = Some(chain);
                return Ok(false);
            };
            let mut writer = ChainWriter::new(mem, &chain.segs);
            // The segments were checked to lie in guest memory and to hold the packet.
            let _ = writer.write_all(&hdr.to_bytes());
            let _ = writer.write_all(&self.payload[..hdr.len as usize]);
            queue.add_used(mem, chain.head, writer.written() as u32)?;
            self.stats.rx_packets += 1;
        }
        Ok(true)
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE_VSOCK
    }
    fn pci_class(&self) -> (u8, u8) {
        (0xff, 0x00)
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        F_STREAM
    }
    fn config_len(&self) -> usize {
        8
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.cid.to_le_bytes();
        data.fill(0);
        let start = offset as usize;
        if let Some(src) = start
            .checked_add(data.len())
            .and_then(|end| config.get(start..end))
        {
            data.copy_from_slice(src);
        }
    }
    fn save_state(&self) -> crate::DeviceState {
        crate::DeviceState::Vsock(crate::Persist::save(self))
    }
    fn reset(&mut self) {
        self.held = None;
        self.restored_rx_head = None;
        self.reset_pending = false;
        self.muxer.reset();
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
            EVENT_QUEUE => self.send_reset(queue, mem),
            _ => Ok(false),
        }
    }
}
