//! vessel's frontend against the real `virtiofsd`: an [`FsDevice`] starts it, connects,
//! negotiates, gives it a memfd as guest memory and its queues; FUSE requests written into
//! the request queue are answered by virtiofsd straight into guest memory (the kick and
//! call eventfds are all that passes between them). It serves the shared directory, a
//! file it creates appears on the host, and a readonly share refuses to create one.
//!
//! Skipped with a note when virtiofsd is not installed, unless VESSEL_REQUIRE_TCG is set
//! (scripts/test.sh installs everything and sets it): then it fails.

use virtio::features::VERSION_1;
use virtio::VirtioDevice as _;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::frontend::RingLayout;
use crate::fs::Share;
use crate::fs_device::{ActiveQueue, FsDevice};
use crate::virtiofsd;

pub(super) const REQ: u64 = 0x20000;
pub(super) const REPLY: u64 = 0x30000;
pub(super) const FUSE_LOOKUP: u32 = 1;
pub(super) const FUSE_INIT: u32 = 26;
const FUSE_CREATE: u32 = 35;
pub(super) const ROOT_NODE: u64 = 1;

pub(super) fn binary() -> Option<std::path::PathBuf> {
    match virtiofsd::find() {
        Ok(path) => Some(path),
        Err(err) if std::env::var_os("VESSEL_REQUIRE_TCG").is_some() => panic!("{err}"),
        Err(err) => {
            println!("skipped: {err}");
            None
        }
    }
}

pub(super) fn in_header(len: usize, opcode: u32, unique: u64, node: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(40);
    h.extend_from_slice(&(40 + len as u32).to_le_bytes());
    h.extend_from_slice(&opcode.to_le_bytes());
    h.extend_from_slice(&unique.to_le_bytes());
    h.extend_from_slice(&node.to_le_bytes());
    h.extend_from_slice(&[0; 16]); // uid, gid, pid, extension length, padding
    h
}

/// Send one FUSE request on the request ring; the reply's error and bytes.
pub(super) fn fuse(t: &mut Started, req: &[u8]) -> (i32, Vec<u8>) {
    let (guest, ring) = (&t.guest, &mut t.rings[1]);
    let (kick, call) = &t.fds[1];
    guest.mem.write_slice(req, GuestAddress(REQ)).unwrap();
    ring.push(
        &guest.mem,
        &[(REQ, req.len() as u32, false), (REPLY, 4096, true)],
    );
    let before = ring.used_idx(&guest.mem);
    kick.write(1).unwrap();
    assert!(readable(call, 5000), "no interrupt from virtiofsd");
    call.read().unwrap();
    ring.wait_used(&guest.mem, before + 1);
    let (_, written) = ring.used_elem(&guest.mem, before);
    let mut reply = vec![0u8; written as usize];
    guest
        .mem
        .read_slice(&mut reply, GuestAddress(REPLY))
        .unwrap();
    let error = i32::from_le_bytes(reply[4..8].try_into().unwrap());
    (error, reply)
}

/// A device for `share` activated with both queues, FUSE initialised.
pub(super) struct Started {
    pub device: FsDevice,
    pub guest: Guest,
    pub rings: [Ring; 2],
    pub fds: Vec<(EventFd, EventFd)>,
}

/// The queues of `rings` as the device takes them, each at its index in `bases` (0 when
/// absent).
pub(super) fn active_queues<'a>(
    rings: &[Ring; 2],
    fds: &'a [(EventFd, EventFd)],
    bases: &[(usize, u16)],
) -> Vec<(usize, ActiveQueue<'a>)> {
    rings
        .iter()
        .enumerate()
        .map(|(i, ring)| {
            let c = ring.config();
            let layout = RingLayout {
                size: c.queue_size,
                desc: c.desc_table_addr - FRONTEND_VA,
                avail: c.avail_ring_addr - FRONTEND_VA,
                used: c.used_ring_addr - FRONTEND_VA,
            };
            let next_avail = bases.iter().find(|b| b.0 == i).map_or(0, |b| b.1);
            let (kick, call) = &fds[i];
            let queue = ActiveQueue {
                layout,
                next_avail,
                kick,
                call,
            };
            (i, queue)
        })
        .collect()
}

pub(super) fn start(binary: &std::path::Path, share: Share, socket: &std::path::Path) -> Started {
    let mut device = FsDevice::start(binary, share, socket).unwrap();
    assert_eq!(device.device_type(), 26);
    assert_eq!(device.queue_max_sizes().len(), 2);
    assert_ne!(device.offered_features() & VERSION_1, 0);
    let guest = Guest::new();
    let rings = [Ring::new(0, QUEUE_SIZE), Ring::new(1, QUEUE_SIZE)];
    let fds: Vec<(EventFd, EventFd)> = (0..2)
        .map(|_| {
            let kick = EventFd::new(EFD_NONBLOCK).unwrap();
            (kick, EventFd::new(EFD_NONBLOCK).unwrap())
        })
        .collect();
    let queues = active_queues(&rings, &fds, &[]);
    // The device hands virtiofsd the real mapping of guest memory.
    device.activate(VERSION_1, &guest.mem, &queues).unwrap();
    drop(queues);
    let mut t = Started {
        device,
        guest,
        rings,
        fds,
    };
    // FUSE_INIT 7.31: the reply is protocol 7.x.
    let mut init = in_header(16, FUSE_INIT, 1, 0);
    for v in [7u32, 31, 0x20000, 0] {
        init.extend_from_slice(&v.to_le_bytes());
    }
    let (error, reply) = fuse(&mut t, &init);
    assert_eq!(error, 0);
    assert_eq!(u32::from_le_bytes(reply[16..20].try_into().unwrap()), 7);
    t
}

#[test]
fn virtiofsd_serves_the_share_through_vessels_frontend() {
    let Some(binary) = binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("hello"), vec![7u8; 12345]).unwrap();
    let socket = dir.path().join("fs.sock");
    let mut t = start(
        &binary,
        Share::new(&shared, "data", false).unwrap(),
        &socket,
    );

    // LOOKUP "hello" in the root: its size is the host file's.
    let mut lookup = in_header(6, FUSE_LOOKUP, 2, ROOT_NODE);
    lookup.extend_from_slice(b"hello\0");
    let (error, reply) = fuse(&mut t, &lookup);
    assert_eq!(error, 0);
    // fuse_out_header (16), nodeid, generation, entry/attr valid (32), nsecs (8), ino (8).
    let size = u64::from_le_bytes(reply[64..72].try_into().unwrap());
    assert_eq!(size, 12345);
    // CREATE works on a writable share and the host sees the file.
    let (error, _) = fuse(&mut t, &create_request(3, b"new\0"));
    assert_eq!(error, 0);
    assert!(shared.join("new").is_file());

    t.device.stop_queues().unwrap();
    drop(t);
    assert!(!socket.exists(), "the socket is removed with virtiofsd");
}

#[test]
fn a_readonly_share_refuses_writes() {
    let Some(binary) = binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fs.sock");
    let shared = dir.path().join("ro");
    std::fs::create_dir(&shared).unwrap();
    let mut t = start(&binary, Share::new(&shared, "ro", true).unwrap(), &socket);
    let (error, _) = fuse(&mut t, &create_request(2, b"nope\0"));
    assert_eq!(error, -libc::EROFS);
    assert!(!shared.join("nope").exists());
}

/// FUSE_CREATE of `name` in the root, read-write, mode 0644.
pub(super) fn create_request(unique: u64, name: &[u8]) -> Vec<u8> {
    let mut req = in_header(16 + name.len(), FUSE_CREATE, unique, ROOT_NODE);
    for v in [
        libc::O_RDWR as u32 | libc::O_CREAT as u32,
        0o100644,
        0o022,
        0,
    ] {
        req.extend_from_slice(&v.to_le_bytes());
    }
    req.extend_from_slice(name);
    req
}
