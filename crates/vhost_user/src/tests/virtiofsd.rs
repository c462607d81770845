//! vessel's frontend against the real `virtiofsd`: started by [`Virtiofsd`], connected,
//! negotiated, given a memfd as guest memory and its queues; FUSE requests written into
//! the request queue are answered by virtiofsd straight into guest memory (the kick and
//! call eventfds are all that passes between them), and it sees the shared directory.
//!
//! Skipped with a note when virtiofsd is not installed, unless VESSEL_REQUIRE_TCG is set
//! (scripts/test.sh installs everything and sets it): then it fails.

use std::os::fd::AsFd;

use virtio::features::VERSION_1;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::frontend::{DeviceConnection, MemoryRegion, RingLayout};
use crate::fs::Share;
use crate::virtiofsd::{self, Virtiofsd};

const REQ: u64 = 0x20000;
const REPLY: u64 = 0x30000;
const FUSE_LOOKUP: u32 = 1;
const FUSE_INIT: u32 = 26;
const ROOT_NODE: u64 = 1;

fn binary() -> Option<std::path::PathBuf> {
    match virtiofsd::find() {
        Ok(path) => Some(path),
        Err(err) if std::env::var_os("VESSEL_REQUIRE_TCG").is_some() => panic!("{err}"),
        Err(err) => {
            println!("skipped: {err}");
            None
        }
    }
}

fn in_header(len: usize, opcode: u32, unique: u64, node: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(40);
    h.extend_from_slice(&(40 + len as u32).to_le_bytes());
    h.extend_from_slice(&opcode.to_le_bytes());
    h.extend_from_slice(&unique.to_le_bytes());
    h.extend_from_slice(&node.to_le_bytes());
    h.extend_from_slice(&[0; 16]); // uid, gid, pid, extension length, padding
    h
}

/// Send one FUSE request on the request ring and return the reply's bytes.
fn fuse(guest: &Guest, ring: &mut Ring, kick: &EventFd, call: &EventFd, req: &[u8]) -> Vec<u8> {
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
    assert_eq!(error, 0, "FUSE error {error}");
    reply
}

#[test]
fn virtiofsd_serves_the_share_through_vessels_frontend() {
    let Some(binary) = binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("hello"), vec![7u8; 12345]).unwrap();
    let share = Share::new(&shared, "data", false).unwrap();
    let socket = dir.path().join("fs.sock");
    let daemon = Virtiofsd::start(&binary, &share, &socket).unwrap();

    let mut conn = DeviceConnection::connect(daemon.socket(), 2).unwrap();
    // Queue 0 is the high-priority queue, queue 1 the request queue.
    conn.negotiate(VERSION_1, VERSION_1, 2).unwrap();
    let guest = Guest::new();
    conn.set_memory(&[MemoryRegion {
        gpa: 0,
        size: MEM_SIZE,
        host_addr: FRONTEND_VA,
        fd: guest.file.as_fd(),
        offset: 0,
    }])
    .unwrap();
    let mut rings = [Ring::new(0, QUEUE_SIZE), Ring::new(1, QUEUE_SIZE)];
    let fds: Vec<(EventFd, EventFd)> = (0..2)
        .map(|_| {
            let kick = EventFd::new(EFD_NONBLOCK).unwrap();
            (kick, EventFd::new(EFD_NONBLOCK).unwrap())
        })
        .collect();
    for (i, ring) in rings.iter().enumerate() {
        let c = ring.config();
        let layout = RingLayout {
            size: c.queue_size,
            desc: c.desc_table_addr - FRONTEND_VA,
            avail: c.avail_ring_addr - FRONTEND_VA,
            used: c.used_ring_addr - FRONTEND_VA,
        };
        conn.start_queue(i, &layout, &fds[i].0, &fds[i].1).unwrap();
    }
    let (kick, call) = &fds[1];
    let ring = &mut rings[1];

    // FUSE_INIT 7.31: the reply is protocol 7.x.
    let mut init = in_header(16, FUSE_INIT, 1, 0);
    for v in [7u32, 31, 0x20000, 0] {
        init.extend_from_slice(&v.to_le_bytes());
    }
    let reply = fuse(&guest, ring, kick, call, &init);
    assert_eq!(u32::from_le_bytes(reply[16..20].try_into().unwrap()), 7);

    // LOOKUP "hello" in the root: its size is the host file's.
    let mut lookup = in_header(6, FUSE_LOOKUP, 2, ROOT_NODE);
    lookup.extend_from_slice(b"hello\0");
    let reply = fuse(&guest, ring, kick, call, &lookup);
    // fuse_out_header (16), nodeid, generation, entry/attr valid (32), nsecs (8), ino (8).
    let size = u64::from_le_bytes(reply[64..72].try_into().unwrap());
    assert_eq!(size, 12345);

    drop(conn);
    drop(daemon);
    assert!(!socket.exists(), "the socket is removed with virtiofsd");
}
