//! The backend's state: the device model, which lives as long as the process, and the
//! session of the connected frontend (its memory, vrings and negotiated features), which
//! is dropped whole when the frontend goes away.
//!
//! Everything the frontend sends is checked here: queue indices, sizes, ring addresses
//! (translated from the frontend's address space and checked to lie in its memory),
//! features. A refused message leaves the session as it was.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use vhost::vhost_user::message::{
    VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use virtio::features::{RING_EVENT_IDX, RING_INDIRECT_DESC, VERSION_1};
use virtio::{Queue, QueueError, QueueLayout, VirtioDevice, DEVICE_FEATURES_TRANSPORT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::log::{LogMemory, SharedHandle};
use crate::memory::{GuestRam, MemoryError};
use crate::vring::{Kick, RingAddrs, Vring};

/// Most queues a device may have (pending work is a 64-bit mask).
pub const MAX_QUEUES: usize = 64;

const PROTOCOL_FEATURES: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
/// VHOST_F_LOG_ALL: while acked, every page the backend writes is set in the frontend's
/// dirty log (a migration is copying guest memory).
const LOG_ALL: u64 = VhostUserVirtioFeatures::LOG_ALL.bits();

const DEVICE_TYPE_NET: u16 = 1;

/// Protocol features the backend offers for a device of `device_type`: CONFIG except for
/// virtio-net, whose configuration (MAC, link) the frontend provides itself (QEMU warns
/// about a net backend offering it); the vhost crate adds REPLY_ACK itself. LOG_SHMFD:
/// the dirty log of a migration comes as shared memory (crate::log).
pub fn offered_protocol_features(device_type: u16) -> VhostUserProtocolFeatures {
    let base = VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::LOG_SHMFD;
    if device_type == DEVICE_TYPE_NET {
        base
    } else {
        base | VhostUserProtocolFeatures::CONFIG
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no frontend is connected")]
    NoSession,
    #[error("the device has {0} queues; 1..={MAX_QUEUES} supported")]
    QueueCount(usize),
    #[error("queue {0} does not exist")]
    NoSuchQueue(u32),
    #[error("queue {0} is running (stop it with GET_VRING_BASE first)")]
    Running(u32),
    #[error("queue size {size} is not a power of two in 1..={max}")]
    BadSize { size: u32, max: u16 },
    #[error("available index {0} does not fit 16 bits")]
    BadBase(u32),
    #[error("features {0:#x} were not offered")]
    UnofferedFeatures(u64),
    #[error("the driver did not accept VIRTIO_F_VERSION_1")]
    NoVersion1,
    #[error("protocol features {0:#x} were not offered")]
    UnofferedProtocolFeatures(u64),
    #[error("{ring} address {addr:#x} is outside the frontend's memory")]
    AddrOutside { ring: &'static str, addr: u64 },
    #[error("queue {index} cannot start: {source}")]
    Start {
        index: usize,
        #[source]
        source: QueueError,
    },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("watching the kick fd of queue {index}: {source}")]
    KickFd {
        index: usize,
        #[source]
        source: io::Error,
    },
    #[error(
        "configuration access {offset:#x}+{len:#x} is outside the {config_len}-byte configuration"
    )]
    ConfigRange {
        offset: u32,
        len: usize,
        config_len: usize,
    },
    #[error("creating the worker's epoll or eventfd: {0}")]
    Io(#[source] io::Error),
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    #[error("VHOST_F_LOG_ALL acked without a dirty log (SET_LOG_BASE comes first)")]
    NoLogBase,
}

/// What the worker thread of a session waits on (besides its stop eventfd).
pub(crate) struct WorkerFds {
    /// The kick set: the rings' kick eventfds, each with its queue index as token. The
    /// thread reading the socket adds and removes them as SET_VRING_KICK & co arrive
    /// (epoll_ctl on a kernel epoll is safe across threads); the worker watches this
    /// epoll's own fd, readable while a kick is pending.
    pub kicks: Arc<Epoll>,
    /// Written when a ring must be run soon ([`Session::wake`]).
    pub wake: Arc<EventFd>,
    /// The device backend's fd (a NIC's), which lives as long as the process.
    pub backend: Option<RawFd>,
}

/// Per-connection state.
struct Session {
    /// The kick set ([`WorkerFds::kicks`]).
    kicks: Arc<Epoll>,
    wake: Arc<EventFd>,
    ram: Option<GuestRam>,
    vrings: Vec<Vring>,
    acked_features: u64,
    acked_protocol: u64,
    /// Queues to run as soon as possible (bit per queue).
    pending: u64,
    /// The frontend's dirty log (SET_LOG_BASE), written while LOG_ALL is acked.
    log: Option<Arc<LogMemory>>,
    /// Whether this session turned the process's dirty log on ([`dirty_log`] is one per
    /// process; a session that never logged never turns it off).
    logging: bool,
}

impl Session {
    fn protocol_negotiated(&self) -> bool {
        self.acked_features & PROTOCOL_FEATURES != 0
    }

    /// Ask the worker to run `queue` soon.
    fn wake(&mut self, queue: usize) {
        self.pending |= 1 << queue;
        let _ = self.wake.write(1);
    }

    fn unwatch_kick(&self, vring: &Vring) {
        if let Some(fd) = vring.kick_fd() {
            let _ = self
                .kicks
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
    }
}

/// The device and the session of the connected frontend, shared by the thread reading
/// the socket and the worker thread running the queues.
pub(crate) struct Core {
    device: Box<dyn VirtioDevice>,
    offered_features: u64,
    queue_num: u64,
    backend_fd: Option<RawFd>,
    session: Option<Session>,
}

fn set_nonblocking(fd: &File) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Core {
    /// A backend for `device`. `queue_num` is what GET_QUEUE_NUM answers (queues for
    /// virtio-blk, queue pairs for virtio-net); `backend_fd` is polled (edge-triggered)
    /// and runs every queue when ready, as the VMM's I/O thread does for a NIC.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        queue_num: u64,
        backend_fd: Option<RawFd>,
    ) -> Result<Self, SessionError> {
        let queues = device.queue_max_sizes().len();
        if queues == 0 || queues > MAX_QUEUES {
            return Err(SessionError::QueueCount(queues));
        }
        let offered_features =
            device.features() | DEVICE_FEATURES_TRANSPORT | PROTOCOL_FEATURES | LOG_ALL;
        Ok(Self {
            device,
            offered_features,
            queue_num,
            backend_fd,
            session: None,
        })
    }

    /// Start a session for a new frontend.
    pub(crate) fn open_session(&mut self) -> Result<(), SessionError> {
        self.close_session();
        let kicks = Arc::new(Epoll::new().map_err(SessionError::Io)?);
        let wake = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(SessionError::Io)?);
        let vrings = self
            .device
            .queue_max_sizes()
            .iter()
            .map(|&max| Vring::new(max))
            .collect();
        self.session = Some(Session {
            kicks,
            wake,
            ram: None,
            vrings,
            acked_features: 0,
            acked_protocol: 0,
            pending: 0,
            log: None,
            logging: false,
        });
        Ok(())
    }

    /// What the current session's worker waits on.
    pub(crate) fn worker_fds(&self) -> Option<WorkerFds> {
        self.session.as_ref().map(|s| WorkerFds {
            kicks: s.kicks.clone(),
            wake: s.wake.clone(),
            backend: self.backend_fd,
        })
    }

    /// The frontend is gone: drop its memory, rings and fds, make the device's completed
    /// work durable (a disk flushes) and reset it.
    pub(crate) fn close_session(&mut self) {
        if let Some(session) = self.session.take() {
            if session.logging {
                dirty_log::stop();
            }
            self.device.sync();
            self.device.reset();
        }
    }

    fn session(&mut self) -> Result<&mut Session, SessionError> {
        self.session.as_mut().ok_or(SessionError::NoSession)
    }

    fn check_index(&self, index: u32) -> Result<usize, SessionError> {
        let i = index as usize;
        if i < self.device.queue_max_sizes().len() {
            Ok(i)
        } else {
            Err(SessionError::NoSuchQueue(index))
        }
    }

    /// The vring `index` of the session, which must be stopped.
    fn stopped_vring(&mut self, index: u32) -> Result<&mut Vring, SessionError> {
        let i = self.check_index(index)?;
        let vring = &mut self.session()?.vrings[i];
        if vring.is_running() {
            return Err(SessionError::Running(index));
        }
        Ok(vring)
    }

    pub fn features(&self) -> u64 {
        self.offered_features
    }

    pub fn queue_num(&self) -> u64 {
        self.queue_num
    }

    pub fn set_features(&mut self, features: u64) -> Result<(), SessionError> {
        let unoffered = features & !self.offered_features;
        if unoffered != 0 {
            return Err(SessionError::UnofferedFeatures(unoffered));
        }
        // The device models know only the 12-byte virtio-net header and little-endian
        // rings of virtio 1.
        if features & VERSION_1 == 0 {
            return Err(SessionError::NoVersion1);
        }
        let session = self.session()?;
        if features & LOG_ALL != 0 && session.log.is_none() {
            return Err(SessionError::NoLogBase);
        }
        let before = std::mem::replace(&mut session.acked_features, features);
        // A migration turns LOG_ALL on and off while the rings run: only a change of
        // the device's own features activates it again.
        if before & !LOG_ALL != features & !LOG_ALL {
            self.device.activate(features & !LOG_ALL);
        }
        self.update_logging();
        Ok(())
    }

    /// SET_LOG_BASE: the dirty log to write while LOG_ALL is acked.
    pub fn set_log_base(&mut self, file: File, size: u64, offset: u64) -> Result<(), SessionError> {
        let log = LogMemory::map(file, size, offset)?;
        self.session()?.log = Some(Arc::new(log));
        self.update_logging();
        Ok(())
    }

    /// Log the pages the device writes into the frontend's dirty log exactly while
    /// LOG_ALL is acked.
    fn update_logging(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let log = Some(&session.log)
            .filter(|_| session.acked_features & LOG_ALL != 0)
            .and_then(|log| log.clone());
        match log {
            Some(log) => {
                dirty_log::start_shared(Box::new(SharedHandle(log)));
                session.logging = true;
            }
            None if session.logging => {
                dirty_log::stop();
                session.logging = false;
            }
            None => {}
        }
    }

    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        offered_protocol_features(self.device.device_type())
    }

    pub fn set_protocol_features(&mut self, features: u64) -> Result<(), SessionError> {
        let unoffered = features & !self.protocol_features().bits();
        if unoffered != 0 {
            return Err(SessionError::UnofferedProtocolFeatures(unoffered));
        }
        self.session()?.acked_protocol = features;
        Ok(())
    }

    /// Stop every ring and forget memory and features (RESET_OWNER / RESET_DEVICE).
    pub fn reset(&mut self) -> Result<(), SessionError> {
        let session = self.session()?;
        for vring in &session.vrings {
            session.unwatch_kick(vring);
        }
        for vring in &mut session.vrings {
            *vring = Vring::new(vring.max_size);
        }
        session.ram = None;
        session.acked_features = 0;
        session.pending = 0;
        session.log = None;
        self.update_logging();
        self.device.reset();
        Ok(())
    }

    pub fn set_mem_table(
        &mut self,
        regions: &[VhostUserMemoryRegion],
        files: Vec<File>,
    ) -> Result<(), SessionError> {
        self.session()?;
        let ram = GuestRam::map(regions, files)?;
        let session = self.session()?;
        session.ram = Some(ram);
        // Running rings move to the new table (memory hot-plug) or stop if they no
        // longer fit in it.
        for i in 0..session.vrings.len() {
            let vring = &mut self.session()?.vrings[i];
            if let Some(q) = vring.queue.take() {
                vring.base = q.next_avail();
                if let Err(e) = self.start(i) {
                    tracing::error!("vhost-user: queue {i} stopped by the new memory table: {e}");
                    if let Some(s) = &self.session {
                        s.vrings[i].signal_error();
                    }
                }
            }
        }
        self.start_ready()
    }

    pub fn set_vring_num(&mut self, index: u32, num: u32) -> Result<(), SessionError> {
        let vring = self.stopped_vring(index)?;
        let max = vring.max_size;
        let ok = u16::try_from(num).is_ok_and(|n| n.is_power_of_two() && n <= max);
        if !ok {
            return Err(SessionError::BadSize { size: num, max });
        }
        vring.size = num as u16;
        Ok(())
    }

    pub fn set_vring_addr(&mut self, index: u32, addrs: RingAddrs) -> Result<(), SessionError> {
        // A migration sends the running rings' addresses again to turn their used-ring
        // logging on (pages are logged by guest address whatever the flag says).
        let i = self.check_index(index)?;
        let vring = &self.session()?.vrings[i];
        if vring.is_running() && vring.addrs == Some(addrs) {
            return Ok(());
        }
        self.stopped_vring(index)?;
        let session = self.session()?;
        // Checked now when the memory is known; in any case again when the ring starts.
        if let Some(ram) = &session.ram {
            translate(ram, addrs)?;
        }
        session.vrings[index as usize].addrs = Some(addrs);
        self.start_ready()
    }

    pub fn set_vring_base(&mut self, index: u32, base: u32) -> Result<(), SessionError> {
        let vring = self.stopped_vring(index)?;
        vring.base = u16::try_from(base).map_err(|_| SessionError::BadBase(base))?;
        Ok(())
    }

    /// Stop ring `index` and return the available index to resume from.
    pub fn get_vring_base(&mut self, index: u32) -> Result<u16, SessionError> {
        let i = self.check_index(index)?;
        let session = self.session.as_mut().ok_or(SessionError::NoSession)?;
        let vring = &mut session.vrings[i];
        let was_running = vring.queue.is_some();
        if let Some(q) = vring.queue.take() {
            vring.base = q.next_avail();
        }
        let base = vring.base;
        session.unwatch_kick(&session.vrings[i]);
        session.vrings[i].kick = None;
        if was_running {
            // Buffers the device held for later (virtio-net receive chains) belonged to
            // the stopped ring.
            let features = session.acked_features;
            self.device.sync();
            self.device.reset();
            self.device.activate(features);
        }
        Ok(base)
    }

    /// SET_VRING_KICK: `None` is VHOST_USER_VRING_NOFD_MASK (poll the ring). Starts the
    /// ring once memory and addresses are known.
    pub fn set_vring_kick(&mut self, index: u32, fd: Option<File>) -> Result<(), SessionError> {
        let i = self.check_index(index)?;
        let session = self.session()?;
        session.unwatch_kick(&session.vrings[i]);
        session.vrings[i].kick = None;
        let kick = match fd {
            Some(fd) => {
                let watch = set_nonblocking(&fd).and_then(|()| {
                    session.kicks.ctl(
                        ControlOperation::Add,
                        fd.as_raw_fd(),
                        EpollEvent::new(EventSet::IN, i as u64),
                    )
                });
                watch.map_err(|source| SessionError::KickFd { index: i, source })?;
                Kick::Fd(fd)
            }
            None => Kick::Polled,
        };
        session.vrings[i].kick = Some(kick);
        if session.vrings[i].is_running() {
            session.wake(i);
            return Ok(());
        }
        self.start(i)
    }

    pub fn set_vring_call(&mut self, index: u32, fd: Option<File>) -> Result<(), SessionError> {
        let i = self.check_index(index)?;
        self.session()?.vrings[i].call = fd;
        Ok(())
    }

    pub fn set_vring_err(&mut self, index: u32, fd: Option<File>) -> Result<(), SessionError> {
        let i = self.check_index(index)?;
        self.session()?.vrings[i].err = fd;
        Ok(())
    }

    pub fn set_vring_enable(&mut self, index: u32, enable: bool) -> Result<(), SessionError> {
        let i = self.check_index(index)?;
        let session = self.session()?;
        session.vrings[i].enabled = enable;
        if enable {
            session.wake(i);
        }
        Ok(())
    }

    /// `size` bytes of the device configuration from `offset`; bytes past its end are
    /// refused rather than made up.
    pub fn read_config(&self, offset: u32, size: u32) -> Result<Vec<u8>, SessionError> {
        let config_len = self.device.config_len();
        let len = size as usize;
        let end = (offset as usize).checked_add(len);
        if end.is_none_or(|end| end > config_len) {
            return Err(SessionError::ConfigRange {
                offset,
                len,
                config_len,
            });
        }
        let mut data = vec![0u8; len];
        self.device.read_config(u64::from(offset), &mut data);
        Ok(data)
    }

    pub fn write_config(&mut self, offset: u32, data: &[u8]) -> Result<(), SessionError> {
        let config_len = self.device.config_len();
        let end = (offset as usize).checked_add(data.len());
        if end.is_none_or(|end| end > config_len) {
            return Err(SessionError::ConfigRange {
                offset,
                len: data.len(),
                config_len,
            });
        }
        self.device.write_config(u64::from(offset), data);
        Ok(())
    }

    /// Start every stopped ring that has a kick, addresses and memory.
    fn start_ready(&mut self) -> Result<(), SessionError> {
        let Some(session) = &self.session else {
            return Ok(());
        };
        let ready: Vec<usize> = (0..session.vrings.len())
            .filter(|&i| {
                let v = &session.vrings[i];
                !v.is_running() && v.kick.is_some() && v.addrs.is_some()
            })
            .collect();
        ready.into_iter().try_for_each(|i| self.start(i))
    }

    /// Start ring `i` at its base if everything it needs is known. A ring that cannot
    /// start loses its kick: it stays stopped until the next SET_VRING_KICK.
    fn start(&mut self, i: usize) -> Result<(), SessionError> {
        let result = self.try_start(i);
        if result.is_err() {
            if let Some(session) = &mut self.session {
                session.unwatch_kick(&session.vrings[i]);
                session.vrings[i].kick = None;
            }
        }
        result
    }

    fn try_start(&mut self, i: usize) -> Result<(), SessionError> {
        let session = self.session()?;
        let vring = &session.vrings[i];
        let (Some(ram), Some(addrs), Some(_)) = (&session.ram, vring.addrs, &vring.kick) else {
            return Ok(());
        };
        let (desc, avail, used) = translate(ram, addrs)?;
        let layout = QueueLayout {
            size: vring.size,
            desc,
            avail,
            used,
        };
        let features = session.acked_features;
        let queue = Queue::resume(
            ram.memory(),
            layout,
            features & RING_EVENT_IDX != 0,
            features & RING_INDIRECT_DESC != 0,
            vring.base,
        )
        .map_err(|source| SessionError::Start { index: i, source })?;
        session.vrings[i].queue = Some(queue);
        session.wake(i);
        Ok(())
    }

    /// A kick arrived on queue `queue`'s fd.
    pub(crate) fn kicked(&mut self, queue: u64) {
        if let Some(s) = &mut self.session {
            if let Some(v) = usize::try_from(queue).ok().and_then(|q| s.vrings.get(q)) {
                v.drain_kick();
                s.pending |= 1 << queue;
            }
        }
    }

    /// The backend's fd is ready: every queue may move.
    pub(crate) fn backend_ready(&mut self) {
        if let Some(s) = &mut self.session {
            s.pending |= (1u64 << (s.vrings.len() - 1) << 1).wrapping_sub(1);
        }
    }

    /// Whether some ring must be run without waiting for an event.
    pub(crate) fn has_pending(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.pending != 0)
    }

    /// Whether some running ring has no kick fd and must be polled.
    pub(crate) fn has_polled(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.vrings.iter().any(Vring::is_polled))
    }

    /// Run the rings with pending work and the polled ones.
    pub(crate) fn run_pending(&mut self) {
        let Some(session) = &mut self.session else {
            return;
        };
        let polled = session
            .vrings
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_polled())
            .fold(0u64, |m, (i, _)| m | 1 << i);
        let work = std::mem::take(&mut session.pending) | polled;
        for i in 0..session.vrings.len() {
            if work & (1 << i) != 0 {
                self.run_queue(i);
            }
        }
    }

    /// Run every running ring once (tests, fuzzing: what a kick of each would do).
    pub fn run_all(&mut self) {
        if let Some(s) = &mut self.session {
            s.pending = u64::MAX >> (MAX_QUEUES - s.vrings.len());
        }
        self.run_pending();
    }

    fn run_queue(&mut self, i: usize) {
        let Core {
            device, session, ..
        } = self;
        let Some(session) = session else {
            return;
        };
        let protocol = session.protocol_negotiated();
        let Some(ram) = &session.ram else {
            return;
        };
        let vring = &mut session.vrings[i];
        if protocol && !vring.enabled {
            return;
        }
        let Some(queue) = vring.queue.as_mut() else {
            return;
        };
        let mem = ram.memory();
        let run = virtio::run_queue(device.as_mut(), i, queue, mem);
        if run.interrupt {
            vring.signal_used();
        }
        match run.more {
            Ok(true) => session.pending |= 1 << i,
            Ok(false) => {}
            Err(e) => {
                tracing::error!("vhost-user: queue {i} is broken and stopped: {e}");
                vring.queue = None;
                vring.signal_error();
            }
        }
    }
}

/// Guest physical addresses of a ring given in the frontend's address space.
fn translate(ram: &GuestRam, addrs: RingAddrs) -> Result<(u64, u64, u64), SessionError> {
    let one = |ring: &'static str, addr: u64| {
        ram.guest_addr(addr)
            .ok_or(SessionError::AddrOutside { ring, addr })
    };
    Ok((
        one("descriptor table", addrs.desc)?,
        one("available ring", addrs.avail)?,
        one("used ring", addrs.used)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blk_core() -> (tempfile::TempDir, Core) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let image = block::open(&path, &block::OpenOptions::default()).unwrap();
        let device = virtio::blk::Block::new(image, "serial");
        (dir, Core::new(Box::new(device), 1, None).unwrap())
    }

    #[test]
    fn config_reads_stay_inside_the_configuration() {
        let (_dir, core) = blk_core();
        let capacity = core.read_config(0, 8).unwrap();
        assert_eq!(u64::from_le_bytes(capacity.try_into().unwrap()), 2048);
        assert_eq!(core.read_config(0, 60).unwrap().len(), 60);
        // Bytes past the device's 60 (fields of features it does not offer) would be
        // made up: refused.
        assert!(core.read_config(56, 8).is_err());
        assert!(core.read_config(u32::MAX, 4).is_err());
    }

    #[test]
    fn features_must_be_offered_and_include_version_1() {
        let (_dir, mut core) = blk_core();
        assert!(matches!(
            core.set_features(VERSION_1),
            Err(SessionError::NoSession)
        ));
        core.open_session().unwrap();
        let offered = core.features();
        assert!(matches!(
            core.set_features(offered & !VERSION_1),
            Err(SessionError::NoVersion1)
        ));
        assert!(matches!(
            core.set_features(offered | 1 << 60),
            Err(SessionError::UnofferedFeatures(_))
        ));
        // LOG_ALL is offered, but needs a dirty log first.
        assert!(matches!(
            core.set_features(offered),
            Err(SessionError::NoLogBase)
        ));
        core.set_features(offered & !LOG_ALL).unwrap();
        assert!(matches!(
            core.set_protocol_features(VhostUserProtocolFeatures::PAGEFAULT.bits()),
            Err(SessionError::UnofferedProtocolFeatures(_))
        ));
        // Nothing to answer for a queue the device lacks.
        assert!(matches!(
            core.get_vring_base(1),
            Err(SessionError::NoSuchQueue(1))
        ));
        assert_eq!(core.get_vring_base(0).unwrap(), 0);
    }
}
