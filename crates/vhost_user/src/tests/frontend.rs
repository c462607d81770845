//! vessel's vhost-user frontend ([`crate::frontend::DeviceConnection`]) against vessel's
//! own backend over an in-process socket pair: the handshake, memory table, queue set-up
//! and a request served through the ring with the call eventfd signalled; bad input from
//! the driver (rings outside memory, bad sizes) and a backend lacking features refused.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use vhost::vhost_user::Frontend;
use virtio::features::{RING_EVENT_IDX, VERSION_1};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::blk::{blk_backend, disk_image, request};
use super::*;
use crate::frontend::{DeviceConnection, FrontendError, MemoryRegion, RingLayout};

const T_IN: u32 = 0;
const STATUS: u64 = 0x13000;

fn connect(backend: &Arc<Backend>) -> (DeviceConnection, Served) {
    let (fe, served) = serve(backend);
    (DeviceConnection::from_frontend(fe), served)
}

fn memory(guest: &Guest) -> MemoryRegion<'_> {
    MemoryRegion {
        gpa: 0,
        size: MEM_SIZE,
        host_addr: FRONTEND_VA,
        fd: guest.file.as_fd(),
        offset: 0,
    }
}

fn layout(ring: &Ring) -> RingLayout {
    let config = ring.config();
    // The test ring's addresses are frontend addresses; the driver's are guest-physical.
    RingLayout {
        size: ring.config().queue_size,
        desc: config.desc_table_addr - FRONTEND_VA,
        avail: config.avail_ring_addr - FRONTEND_VA,
        used: config.used_ring_addr - FRONTEND_VA,
    }
}

#[test]
fn frontend_serves_a_request_through_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    let (mut conn, served) = connect(&backend);
    let acked = conn
        .negotiate(VERSION_1, VERSION_1 | RING_EVENT_IDX | (1 << 60), 1)
        .unwrap();
    assert_eq!(
        acked,
        VERSION_1 | RING_EVENT_IDX | crate::frontend::PROTOCOL_FEATURES_BIT,
        "unoffered driver bits are not acked"
    );
    let guest = Guest::new();
    conn.set_memory(&[memory(&guest)]).unwrap();
    let mut ring = Ring::new(0, QUEUE_SIZE);
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let call = EventFd::new(EFD_NONBLOCK).unwrap();
    conn.start_queue(0, &layout(&ring), &kick, &call).unwrap();

    request(&guest, &mut ring, T_IN, 8);
    kick.write(1).unwrap();
    assert!(readable(&call, 5000), "no interrupt from the backend");
    ring.wait_used(&guest.mem, 1);
    let status: u8 = guest.mem.read_obj(GuestAddress(STATUS)).unwrap();
    assert_eq!(status, 0);

    assert_eq!(
        conn.stop_queue(0).unwrap(),
        1,
        "backend stopped after one entry"
    );
    drop(conn);
    assert!(matches!(served.join(), ConnectionEnd::Disconnected));
}

#[test]
fn rings_outside_guest_memory_are_refused_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    let (mut conn, served) = connect(&backend);
    conn.negotiate(VERSION_1, VERSION_1, 1).unwrap();
    let guest = Guest::new();
    conn.set_memory(&[memory(&guest)]).unwrap();
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let call = EventFd::new(EFD_NONBLOCK).unwrap();
    let good = layout(&Ring::new(0, QUEUE_SIZE));
    let cases = [
        RingLayout {
            desc: MEM_SIZE - 16,
            ..good
        },
        RingLayout {
            used: u64::MAX - 4,
            ..good
        },
        RingLayout {
            avail: MEM_SIZE,
            ..good
        },
    ];
    for bad in cases {
        let err = conn.start_queue(0, &bad, &kick, &call).unwrap_err();
        assert!(
            matches!(err, FrontendError::RingOutsideMemory { queue: 0, .. }),
            "{err}"
        );
    }
    for size in [0, 3, 65535] {
        let bad = RingLayout { size, ..good };
        let err = conn.start_queue(0, &bad, &kick, &call).unwrap_err();
        assert!(matches!(err, FrontendError::BadQueueSize { .. }), "{err}");
    }
    // The session is still usable.
    conn.start_queue(0, &good, &kick, &call).unwrap();
    drop(conn);
    assert!(matches!(served.join(), ConnectionEnd::Disconnected));
}

#[test]
fn missing_features_and_queues_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    let (mut conn, served) = connect(&backend);
    let err = conn.negotiate(1 << 60, 0, 1).unwrap_err();
    assert!(
        matches!(err, FrontendError::MissingFeatures { missing, .. } if missing == 1 << 60),
        "{err}"
    );
    drop(conn);
    served.join();

    let (mut conn, served) = connect(&backend);
    let err = conn.negotiate(VERSION_1, VERSION_1, 2).unwrap_err();
    assert!(
        matches!(
            err,
            FrontendError::TooFewQueues {
                offered: 1,
                needed: 2
            }
        ),
        "{err}"
    );
    drop(conn);
    served.join();
}

#[test]
fn a_backend_that_hangs_up_is_an_error() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    drop(theirs);
    let mut conn = DeviceConnection::from_frontend(Frontend::from_stream(ours, 1));
    let err = conn.negotiate(VERSION_1, VERSION_1, 1).unwrap_err();
    assert!(matches!(err, FrontendError::Message { .. }), "{err}");
}

#[test]
fn memory_regions_come_from_file_backed_guest_memory() {
    let guest = Guest::new();
    let regions = crate::frontend::memory_regions(&guest.mem).unwrap();
    assert_eq!(regions.len(), 1);
    assert_eq!(
        (regions[0].gpa, regions[0].size, regions[0].offset),
        (0, MEM_SIZE, 0)
    );
    let anonymous =
        vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    let err = crate::frontend::memory_regions(&anonymous).unwrap_err();
    assert!(matches!(err, FrontendError::NotShared { gpa: 0 }), "{err}");
}
