//! vessel as a vhost-user **frontend**: the VMM side of a device whose queues an external
//! backend (`virtiofsd` for virtio-fs) serves over a unix socket.
//!
//! [`DeviceConnection`] drives the rust-vmm `vhost` crate's [`Frontend`] through the
//! handshake a PCI device needs when the driver sets DRIVER_OK:
//!
//! 1. SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES (REPLY_ACK, MQ, CONFIG and
//!    DEVICE_STATE as offered), SET_FEATURES with the driver's features plus
//!    `VHOST_USER_F_PROTOCOL_FEATURES`.
//! 2. SET_MEM_TABLE with guest memory as memfd regions ([`MemoryRegion`]): the backend
//!    maps the same pages, so guest memory must be a shared memfd (sealed against
//!    shrinking, which vessel's own backends demand too).
//! 3. Per queue SET_VRING_NUM/BASE/ADDR/CALL/KICK/ENABLE with the queue's eventfds: the
//!    kick eventfd is the PCI notify ioeventfd and the call eventfd the irqfd, so the data
//!    path never goes through the VMM.
//!
//! Ring addresses are guest-physical (the driver programmed them): they are translated to
//! the frontend's virtual addresses through the memory table and refused when outside it,
//! since the backend's view of them is only the table.
//!
//! A queue starts at index 0 at DRIVER_OK, or where a snapshot left it
//! ([`DeviceConnection::start_queue_at`]); the backend's own state is saved and loaded by
//! [`crate::backend_state`].

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

/// `VHOST_USER_F_PROTOCOL_FEATURES`: a virtio feature bit that only vhost-user uses.
pub const PROTOCOL_FEATURES_BIT: u64 = 1 << 30;

/// Errors of the frontend side of a vhost-user connection.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("cannot connect to vhost-user backend at {path}: {source}")]
    Connect { path: String, source: vhost::Error },
    #[error("vhost-user {step} failed: {source}")]
    Message {
        step: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the backend lacks required features {missing:#x} (offered {offered:#x})")]
    MissingFeatures { missing: u64, offered: u64 },
    #[error("the backend serves {offered} queues, the device needs {needed}")]
    TooFewQueues { offered: u64, needed: usize },
    #[error("guest memory region at {gpa:#x} (+{size:#x}) is empty or wraps around")]
    BadRegion { gpa: u64, size: u64 },
    #[error("queue {queue}: {what} at guest address {gpa:#x} (+{len:#x}) is outside guest memory")]
    RingOutsideMemory {
        queue: usize,
        what: &'static str,
        gpa: u64,
        len: u64,
    },
    #[error(
        "guest memory at {gpa:#x} is not backed by a shareable file: a vhost-user device \
         needs memfd-backed guest memory"
    )]
    NotShared { gpa: u64 },
    #[error("queue {queue}: size {size} is not a power of two in 1..=32768")]
    BadQueueSize { queue: usize, size: u16 },
    #[error("queue {queue}: the backend's ring index {base} does not fit a split ring's 16 bits")]
    BadVringBase { queue: usize, base: u32 },
}

/// One range of guest memory backed by a shareable file (a memfd).
#[derive(Debug, Clone, Copy)]
pub struct MemoryRegion<'a> {
    /// Guest-physical start.
    pub gpa: u64,
    pub size: u64,
    /// Where the VMM has it mapped.
    pub host_addr: u64,
    /// The file behind it and the region's offset in that file.
    pub fd: BorrowedFd<'a>,
    pub offset: u64,
}

/// The regions of `mem` as SET_MEM_TABLE sends them; every region must be file-backed
/// (vmm's `shared_memory`), anonymous memory cannot be handed to another process.
pub fn memory_regions(mem: &GuestMemoryMmap) -> Result<Vec<MemoryRegion<'_>>, FrontendError> {
    mem.iter()
        .map(|region| {
            let gpa = region.start_addr().0;
            let file = region
                .file_offset()
                .ok_or(FrontendError::NotShared { gpa })?;
            Ok(MemoryRegion {
                gpa,
                size: region.len(),
                host_addr: region.as_ptr() as u64,
                fd: file.file().as_fd(),
                offset: file.start(),
            })
        })
        .collect()
}

/// A split ring as the driver programmed it (guest-physical addresses).
#[derive(Debug, Clone, Copy)]
pub struct RingLayout {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

impl RingLayout {
    /// (name, address, length) of the three parts of the ring.
    fn parts(&self) -> [(&'static str, u64, u64); 3] {
        let n = u64::from(self.size);
        [
            ("descriptor table", self.desc, 16 * n),
            ("available ring", self.avail, 6 + 2 * n),
            ("used ring", self.used, 6 + 8 * n),
        ]
    }
}

/// The frontend's half of one connected vhost-user device.
pub struct DeviceConnection {
    frontend: Frontend,
    offered_features: u64,
    acked_features: u64,
    /// (gpa, size, host address) of the memory table last sent.
    regions: Vec<(u64, u64, u64)>,
    /// DEVICE_STATE was negotiated: the backend saves and loads its state.
    state_transfer: bool,
}

impl DeviceConnection {
    /// Connect to the backend listening at `path`.
    pub fn connect(path: &Path, max_queues: u64) -> Result<Self, FrontendError> {
        let frontend =
            Frontend::connect(path, max_queues).map_err(|source| FrontendError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self::from_frontend(frontend))
    }

    /// Wrap an already connected [`Frontend`] (an in-process pair in tests).
    pub fn from_frontend(frontend: Frontend) -> Self {
        Self {
            frontend,
            offered_features: 0,
            acked_features: 0,
            regions: Vec::new(),
            state_transfer: false,
        }
    }

    /// [`handshake`](Self::handshake) then [`ack_features`](Self::ack_features).
    pub fn negotiate(
        &mut self,
        required: u64,
        driver_features: u64,
        queues: usize,
    ) -> Result<u64, FrontendError> {
        self.handshake(required, queues)?;
        self.ack_features(driver_features)
    }

    /// Once per connection: SET_OWNER, GET_FEATURES (`required` must all be offered),
    /// the protocol features and the queue count (`queues` must be servable). Returns the
    /// offered virtio features.
    pub fn handshake(&mut self, required: u64, queues: usize) -> Result<u64, FrontendError> {
        let f = &mut self.frontend;
        f.set_owner().map_err(msg("SET_OWNER"))?;
        let offered = f.get_features().map_err(msg("GET_FEATURES"))?;
        let missing = (required | PROTOCOL_FEATURES_BIT) & !offered;
        if missing != 0 {
            return Err(FrontendError::MissingFeatures { missing, offered });
        }
        let proto = f
            .get_protocol_features()
            .map_err(msg("GET_PROTOCOL_FEATURES"))?;
        let wanted = VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::DEVICE_STATE;
        let acked_proto = proto & wanted;
        f.set_protocol_features(acked_proto)
            .map_err(msg("SET_PROTOCOL_FEATURES"))?;
        if acked_proto.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            // Every later message is acknowledged, so a refusal is an error here.
            f.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        if acked_proto.contains(VhostUserProtocolFeatures::MQ) {
            let offered_queues = f.get_queue_num().map_err(msg("GET_QUEUE_NUM"))?;
            if offered_queues < queues as u64 {
                return Err(FrontendError::TooFewQueues {
                    offered: offered_queues,
                    needed: queues,
                });
            }
        }
        self.offered_features = offered;
        self.state_transfer = acked_proto.contains(VhostUserProtocolFeatures::DEVICE_STATE);
        Ok(offered)
    }

    /// SET_FEATURES with the driver's features as far as offered (at every DRIVER_OK).
    pub fn ack_features(&mut self, driver_features: u64) -> Result<u64, FrontendError> {
        let acked = (driver_features & self.offered_features) | PROTOCOL_FEATURES_BIT;
        self.frontend
            .set_features(acked)
            .map_err(msg("SET_FEATURES"))?;
        self.acked_features = acked;
        Ok(acked)
    }

    /// The connection's socket.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor belongs to `self.frontend` and lives as long as `self`.
        unsafe { BorrowedFd::borrow_raw(self.frontend.as_raw_fd()) }
    }

    /// The virtio features the backend offered in [`handshake`](Self::handshake).
    pub fn offered_features(&self) -> u64 {
        self.offered_features
    }

    /// Whether the backend saves and loads its own state (DEVICE_STATE negotiated).
    pub fn state_transfer(&self) -> bool {
        self.state_transfer
    }

    /// The features acked in [`negotiate`](Self::negotiate).
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// SET_MEM_TABLE: guest memory as the backend must map it.
    pub fn set_memory(&mut self, regions: &[MemoryRegion<'_>]) -> Result<(), FrontendError> {
        let mut table = Vec::with_capacity(regions.len());
        for r in regions {
            if r.size == 0
                || r.gpa.checked_add(r.size).is_none()
                || r.host_addr.checked_add(r.size).is_none()
            {
                return Err(FrontendError::BadRegion {
                    gpa: r.gpa,
                    size: r.size,
                });
            }
            table.push(VhostUserMemoryRegionInfo {
                guest_phys_addr: r.gpa,
                memory_size: r.size,
                userspace_addr: r.host_addr,
                mmap_offset: r.offset,
                mmap_handle: r.fd.as_raw_fd(),
            });
        }
        self.frontend
            .set_mem_table(&table)
            .map_err(msg("SET_MEM_TABLE"))?;
        self.regions = regions
            .iter()
            .map(|r| (r.gpa, r.size, r.host_addr))
            .collect();
        Ok(())
    }

    /// Hand queue `index` to the backend and enable it: from here the backend reads
    /// kicks from `kick` and signals `call`.
    pub fn start_queue(
        &mut self,
        index: usize,
        ring: &RingLayout,
        kick: &EventFd,
        call: &EventFd,
    ) -> Result<(), FrontendError> {
        self.start_queue_at(index, ring, 0, kick, call)
    }

    /// [`start_queue`](Self::start_queue) with the backend taking the next available
    /// entry at `next_avail` (SET_VRING_BASE): where GET_VRING_BASE left it before a
    /// snapshot.
    pub fn start_queue_at(
        &mut self,
        index: usize,
        ring: &RingLayout,
        next_avail: u16,
        kick: &EventFd,
        call: &EventFd,
    ) -> Result<(), FrontendError> {
        if !ring.size.is_power_of_two() || ring.size > 32768 {
            return Err(FrontendError::BadQueueSize {
                queue: index,
                size: ring.size,
            });
        }
        let [desc, avail, used] = ring
            .parts()
            .map(|(what, gpa, len)| self.host_address(index, what, gpa, len));
        let config = VringConfigData {
            queue_max_size: ring.size,
            queue_size: ring.size,
            flags: 0,
            desc_table_addr: desc?,
            used_ring_addr: used?,
            avail_ring_addr: avail?,
            log_addr: None,
        };
        let f = &mut self.frontend;
        f.set_vring_num(index, ring.size)
            .map_err(msg("SET_VRING_NUM"))?;
        f.set_vring_base(index, next_avail)
            .map_err(msg("SET_VRING_BASE"))?;
        f.set_vring_addr(index, &config)
            .map_err(msg("SET_VRING_ADDR"))?;
        f.set_vring_call(index, call)
            .map_err(msg("SET_VRING_CALL"))?;
        f.set_vring_kick(index, kick)
            .map_err(msg("SET_VRING_KICK"))?;
        f.set_vring_enable(index, true)
            .map_err(msg("SET_VRING_ENABLE"))
    }

    /// Stop queue `index` (device reset, snapshot): disable it and fetch where the
    /// backend was — its next available index, which a split ring keeps in 16 bits (a
    /// larger value is the backend's error).
    pub fn stop_queue(&mut self, index: usize) -> Result<u16, FrontendError> {
        let f = &mut self.frontend;
        f.set_vring_enable(index, false)
            .map_err(msg("SET_VRING_ENABLE"))?;
        let base = f.get_vring_base(index).map_err(msg("GET_VRING_BASE"))?;
        u16::try_from(base).map_err(|_| FrontendError::BadVringBase { queue: index, base })
    }

    /// The frontend's address of `len` guest bytes at `gpa`, all inside one region.
    fn host_address(
        &self,
        queue: usize,
        what: &'static str,
        gpa: u64,
        len: u64,
    ) -> Result<u64, FrontendError> {
        self.regions
            .iter()
            .find(|&&(start, size, _)| {
                gpa >= start && gpa.checked_add(len).is_some_and(|end| end <= start + size)
            })
            .map(|&(start, _, host)| host + (gpa - start))
            .ok_or(FrontendError::RingOutsideMemory {
                queue,
                what,
                gpa,
                len,
            })
    }
}

/// The error of a failed `step`: the `vhost` crate has one error type for the generic
/// backend messages and another for the vhost-user ones.
fn msg<E>(step: &'static str) -> impl Fn(E) -> FrontendError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| FrontendError::Message {
        step,
        source: Box::new(source),
    }
}
