//! In-process tests: the vhost crate's frontend drives a [`Backend`] over a unix socket,
//! with a memfd as guest memory that both sides map, and a split ring written by hand.

mod backend_state;
mod blk;
mod frontend;
mod fs_transport;
mod hostile;
mod net;
mod virtiofsd;
mod virtiofsd_state;

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::{Backend, ConnectionEnd};

/// Guest memory size and where the frontend pretends to have it mapped.
pub const MEM_SIZE: u64 = 1 << 20;
pub const FRONTEND_VA: u64 = 0x7f12_3400_0000;
pub const DESC: u64 = 0x1000;
pub const AVAIL: u64 = 0x2000;
pub const USED: u64 = 0x3000;
pub const QUEUE_SIZE: u16 = 16;
const WAIT: Duration = Duration::from_secs(5);

/// A memfd of `len` bytes sealed against shrinking and growing, as QEMU's
/// memory-backend-memfd makes them.
pub fn memfd(len: u64) -> File {
    let file = unsealed_memfd(len);
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    // SAFETY: F_ADD_SEALS on a descriptor `file` owns; no memory is passed.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    assert_eq!(r, 0, "F_ADD_SEALS: {}", std::io::Error::last_os_error());
    file
}

/// A memfd of `len` bytes that its owner may still shrink.
pub fn unsealed_memfd(len: u64) -> File {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: the name is a NUL-terminated literal; flags are plain constants.
    let fd = unsafe { libc::memfd_create(c"vhost-user-test".as_ptr(), flags) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: memfd_create returned a new fd nobody else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len).unwrap();
    file
}

/// The driver's view of guest memory: the same memfd the backend maps.
pub struct Guest {
    pub file: File,
    pub mem: GuestMemoryMmap,
}

impl Guest {
    pub fn new() -> Self {
        let file = memfd(MEM_SIZE);
        let range = (
            GuestAddress(0),
            MEM_SIZE as usize,
            Some(FileOffset::new(file.try_clone().unwrap(), 0)),
        );
        let mem = GuestMemoryMmap::from_ranges_with_files([range]).unwrap();
        Self { file, mem }
    }

    pub fn region(&self) -> VhostUserMemoryRegionInfo {
        region_info(0, MEM_SIZE, FRONTEND_VA, 0, self.file.as_raw_fd())
    }
}

pub fn region_info(
    gpa: u64,
    size: u64,
    va: u64,
    offset: u64,
    fd: std::os::fd::RawFd,
) -> VhostUserMemoryRegionInfo {
    VhostUserMemoryRegionInfo {
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: va,
        mmap_offset: offset,
        mmap_handle: fd,
    }
}

/// A stop "fd" for the server: readable once `stop` is called.
pub struct Stop {
    tx: UnixStream,
    pub rx: UnixStream,
}

impl Stop {
    pub fn new() -> Self {
        let (tx, rx) = UnixStream::pair().unwrap();
        Self { tx, rx }
    }
    pub fn stop(&self) {
        use std::io::Write;
        (&self.tx).write_all(&[1]).unwrap();
    }
}

/// A split ring driven by hand; ring `n` lives at `n * 0x4000` above the base layout.
pub struct Ring {
    base: u64,
    size: u16,
    avail_idx: u16,
    next_desc: u16,
}

impl Ring {
    pub fn new(index: u64, size: u16) -> Self {
        Self {
            base: index * 0x4000,
            size,
            avail_idx: 0,
            next_desc: 0,
        }
    }

    pub fn config(&self) -> VringConfigData {
        VringConfigData {
            queue_max_size: self.size,
            queue_size: self.size,
            flags: 0,
            desc_table_addr: FRONTEND_VA + self.base + DESC,
            used_ring_addr: FRONTEND_VA + self.base + USED,
            avail_ring_addr: FRONTEND_VA + self.base + AVAIL,
            log_addr: None,
        }
    }

    /// Offer a chain of `(guest address, length, device-writable)` buffers.
    pub fn push(&mut self, mem: &GuestMemoryMmap, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let index = (head + i as u16) % self.size;
            let last = i + 1 == bufs.len();
            let flags = u16::from(!last) | if writable { 2 } else { 0 };
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&((index + 1) % self.size).to_le_bytes());
            mem.write_slice(&raw, GuestAddress(self.base + DESC + 16 * u64::from(index)))
                .unwrap();
        }
        self.next_desc = (head + bufs.len() as u16) % self.size;
        let slot = u64::from(self.avail_idx % self.size);
        mem.write_obj(head, GuestAddress(self.base + AVAIL + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.base + AVAIL + 2))
            .unwrap();
        head
    }

    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.base + USED + 2)).unwrap()
    }

    /// (descriptor head, bytes written) of used entry `n`.
    pub fn used_elem(&self, mem: &GuestMemoryMmap, n: u16) -> (u32, u32) {
        let at = self.base + USED + 4 + 8 * u64::from(n % self.size);
        (
            mem.read_obj(GuestAddress(at)).unwrap(),
            mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    /// EVENT_IDX: interrupt me once the used index passes `idx`.
    pub fn set_used_event(&self, mem: &GuestMemoryMmap, idx: u16) {
        let at = self.base + AVAIL + 4 + 2 * u64::from(self.size);
        mem.write_obj(idx, GuestAddress(at)).unwrap();
    }

    /// Wait until the device has used `count` entries in all.
    pub fn wait_used(&self, mem: &GuestMemoryMmap, count: u16) {
        let start = Instant::now();
        while self.used_idx(mem) != count {
            assert!(start.elapsed() < WAIT, "device did not use entry {count}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Whether `fd` becomes readable within `ms` milliseconds.
pub fn readable(fd: &impl AsRawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}

/// A backend serving one connection on a thread.
pub struct Served {
    pub stop: Stop,
    pub thread: Option<JoinHandle<ConnectionEnd>>,
}

impl Served {
    /// Wait for the connection to end by itself (the frontend hung up or broke it).
    pub fn join(mut self) -> ConnectionEnd {
        self.thread.take().unwrap().join().unwrap()
    }

    /// Stop serving.
    pub fn end(mut self) -> ConnectionEnd {
        self.stop.stop();
        self.thread.take().unwrap().join().unwrap()
    }
}

pub fn serve(backend: &Arc<Backend>) -> (Frontend, Served) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let stop = Stop::new();
    let stop_rx = stop.rx.try_clone().unwrap();
    let backend = backend.clone();
    let thread =
        std::thread::spawn(move || backend.serve_connection(theirs, stop_rx.as_fd()).unwrap());
    let frontend = Frontend::from_stream(ours, 64);
    let served = Served {
        stop,
        thread: Some(thread),
    };
    (frontend, served)
}

/// Negotiate like QEMU: all offered features but LOG_ALL (acked only while migrating),
/// CONFIG / MQ / REPLY_ACK, and every later message asks for an ack (so a refused message
/// is an error here).
pub fn negotiate(fe: &mut Frontend) -> u64 {
    fe.set_owner().unwrap();
    let features = fe.get_features().unwrap() & !VhostUserVirtioFeatures::LOG_ALL.bits();
    fe.set_features(features).unwrap();
    let proto = fe.get_protocol_features().unwrap();
    let needed = VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK;
    assert!(proto.contains(needed), "offered {proto:?}");
    fe.set_protocol_features(proto & (needed | VhostUserProtocolFeatures::CONFIG))
        .unwrap();
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    features
}

/// Ring layout, call and kick for `ring` as queue `index`, then enable it.
pub fn start_ring(fe: &mut Frontend, index: usize, ring: &Ring) -> (EventFd, EventFd) {
    let fds = start_ring_disabled(fe, index, ring);
    fe.set_vring_enable(index, true).unwrap();
    fds
}

/// [`start_ring`] without SET_VRING_ENABLE.
pub fn start_ring_disabled(fe: &mut Frontend, index: usize, ring: &Ring) -> (EventFd, EventFd) {
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let call = EventFd::new(EFD_NONBLOCK).unwrap();
    fe.set_vring_num(index, ring.size).unwrap();
    fe.set_vring_base(index, 0).unwrap();
    fe.set_vring_addr(index, &ring.config()).unwrap();
    fe.set_vring_call(index, &call).unwrap();
    fe.set_vring_kick(index, &kick).unwrap();
    (kick, call)
}
