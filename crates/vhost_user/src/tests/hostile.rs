//! A hostile frontend: every bad message is refused (the frontend hears so through
//! REPLY_ACK), the session stays usable, and a message that cannot be answered closes the
//! connection — never the process.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VringConfigData};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::blk::{blk_backend, disk_image, request};
use super::*;

fn region(gpa: u64, size: u64, va: u64, offset: u64, fd: &File) -> VhostUserMemoryRegionInfo {
    region_info(gpa, size, va, offset, fd.as_raw_fd())
}

#[test]
fn bad_memory_tables_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    let (mut fe, served) = serve(&backend);
    negotiate(&mut fe);
    let guest = Guest::new();
    let f = &guest.file;
    // Larger than the file behind it (a mapping past EOF would fault on access).
    assert!(fe
        .set_mem_table(&[region(0, MEM_SIZE * 2, FRONTEND_VA, 0, f)])
        .is_err());
    // Offset past the end, and unaligned.
    assert!(fe
        .set_mem_table(&[region(0, 0x1000, FRONTEND_VA, MEM_SIZE, f)])
        .is_err());
    assert!(fe
        .set_mem_table(&[region(0, 0x1000, FRONTEND_VA, 0x10, f)])
        .is_err());
    // Overlapping regions, in guest and in frontend address space.
    let half = MEM_SIZE / 2;
    assert!(fe
        .set_mem_table(&[
            region(0, half, FRONTEND_VA, 0, f),
            region(half - 0x1000, half, FRONTEND_VA + half, half, f),
        ])
        .is_err());
    assert!(fe
        .set_mem_table(&[
            region(0, half, FRONTEND_VA, 0, f),
            region(half, half, FRONTEND_VA + 0x1000, half, f),
        ])
        .is_err());
    // The session is still usable.
    fe.set_mem_table(&[guest.region()]).unwrap();
    let mut ring = Ring::new(0, QUEUE_SIZE);
    let (kick, call) = start_ring(&mut fe, 0, &ring);
    request(&guest, &mut ring, 0, 0);
    kick.write(1).unwrap();
    assert!(readable(&call, 5000));
    // Guest addresses that wrap around: the vhost crate itself refuses the message as
    // malformed, and the connection ends.
    assert!(fe
        .set_mem_table(&[region(u64::MAX - 0xfff, 0x2000, FRONTEND_VA, 0, f)])
        .is_err());
    assert!(matches!(served.join(), ConnectionEnd::Failed(_)));
}

#[test]
fn memory_the_frontend_may_shrink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    let (mut fe, served) = serve(&backend);
    negotiate(&mut fe);
    // Accepting this table and then seeing the file shrunk would kill the backend with
    // SIGBUS on its next access to the ring.
    let unsealed = unsealed_memfd(MEM_SIZE);
    assert!(fe
        .set_mem_table(&[region(0, MEM_SIZE, FRONTEND_VA, 0, &unsealed)])
        .is_err());
    unsealed.set_len(0).unwrap();
    // Sealed memory is accepted, cannot be shrunk, and serves requests.
    let guest = Guest::new();
    fe.set_mem_table(&[guest.region()]).unwrap();
    assert!(guest.file.set_len(0).is_err());
    let mut ring = Ring::new(0, QUEUE_SIZE);
    let (kick, call) = start_ring(&mut fe, 0, &ring);
    request(&guest, &mut ring, 0, 0);
    kick.write(1).unwrap();
    assert!(readable(&call, 5000));
    drop(fe);
    assert!(matches!(served.join(), ConnectionEnd::Disconnected));
}

#[test]
fn bad_rings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    let (mut fe, served) = serve(&backend);
    negotiate(&mut fe);
    let guest = Guest::new();
    fe.set_mem_table(&[guest.region()]).unwrap();
    let eventfd = EventFd::new(EFD_NONBLOCK).unwrap();
    let ring = Ring::new(0, QUEUE_SIZE);

    // Queue index out of range (the device has one queue).
    assert!(fe.set_vring_num(1, 16).is_err());
    assert!(fe.set_vring_base(5, 0).is_err());
    assert!(fe.set_vring_addr(63, &ring.config()).is_err());
    assert!(fe.set_vring_kick(1, &eventfd).is_err());
    assert!(fe.set_vring_call(40, &eventfd).is_err());
    assert!(fe.set_vring_enable(2, true).is_err());
    // Sizes: not a power of two, zero, above the device's maximum.
    for size in [12, 0, 512] {
        assert!(fe.set_vring_num(0, size).is_err(), "size {size} accepted");
    }
    // Base beyond 16 bits.
    // (The frontend API takes a u16; the backend checks too, see session.rs.)
    // Ring addresses outside the frontend's memory.
    let outside = VringConfigData {
        desc_table_addr: FRONTEND_VA + MEM_SIZE,
        ..ring.config()
    };
    assert!(fe.set_vring_addr(0, &outside).is_err());
    let below = VringConfigData {
        used_ring_addr: FRONTEND_VA - 0x1000,
        ..ring.config()
    };
    assert!(fe.set_vring_addr(0, &below).is_err());
    // A used ring whose start is in memory but whose end is not: refused at start.
    let straddling = VringConfigData {
        used_ring_addr: FRONTEND_VA + MEM_SIZE - 8,
        ..ring.config()
    };
    fe.set_vring_num(0, QUEUE_SIZE).unwrap();
    fe.set_vring_addr(0, &straddling).unwrap();
    assert!(fe.set_vring_kick(0, &eventfd).is_err());
    // A kick fd epoll cannot watch (a regular file).
    fe.set_vring_addr(0, &ring.config()).unwrap();
    let not_eventfd = tempfile::tempfile().unwrap();
    let raw_kick = unsafe_eventfd_alias(&not_eventfd);
    assert!(fe.set_vring_kick(0, &raw_kick).is_err());
    std::mem::forget(raw_kick);

    // Everything still works with a sane ring.
    let mut ring = Ring::new(0, QUEUE_SIZE);
    let (kick, call) = start_ring(&mut fe, 0, &ring);
    request(&guest, &mut ring, 0, 0);
    kick.write(1).unwrap();
    assert!(readable(&call, 5000));
    // Layout changes while the ring runs are refused; the same addresses again (what a
    // frontend sends to turn used-ring logging on) are not a change.
    assert!(fe.set_vring_num(0, 8).is_err());
    let moved = VringConfigData {
        used_ring_addr: ring.config().used_ring_addr + 4096,
        ..ring.config()
    };
    assert!(fe.set_vring_addr(0, &moved).is_err());
    fe.set_vring_addr(0, &ring.config()).unwrap();
    // A question the backend cannot answer ends the connection.
    assert!(fe.get_vring_base(9).is_err());
    assert!(matches!(served.join(), ConnectionEnd::Failed(_)));
}

/// An `EventFd` value wrapping `file`'s fd, to pass a non-eventfd through the frontend
/// API. The caller must forget it (the fd belongs to `file`).
fn unsafe_eventfd_alias(file: &File) -> EventFd {
    use std::os::fd::FromRawFd;
    // SAFETY: EventFd only wraps the fd number; the caller forgets the value so the fd
    // is closed once, by `file`.
    unsafe { EventFd::from_raw_fd(file.as_raw_fd()) }
}

#[test]
fn garbage_closes_the_connection_and_the_next_one_works() {
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    // An unknown request code, then a header announcing more body than ever comes.
    let messages: [&[u8]; 3] = [
        &[0xff, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        &[5, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 2, 3],
        &[1, 2, 3],
    ];
    for bytes in messages {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let stop = Stop::new();
        let backend2 = backend.clone();
        let stop_rx = stop.rx.try_clone().unwrap();
        let t = std::thread::spawn(move || {
            backend2
                .serve_connection(theirs, std::os::fd::AsFd::as_fd(&stop_rx))
                .unwrap()
        });
        ours.write_all(bytes).unwrap();
        drop(ours);
        assert!(matches!(
            t.join().unwrap(),
            ConnectionEnd::Failed(_) | ConnectionEnd::Disconnected
        ));
    }
    // The backend serves the next frontend normally.
    let (mut fe, served) = serve(&backend);
    negotiate(&mut fe);
    assert_eq!(fe.get_queue_num().unwrap(), 1);
    drop(fe);
    served.end();
}

#[test]
fn messages_before_negotiation_do_not_break_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    let (fe, served) = serve(&backend);
    // No SET_OWNER, no features: rings without memory never start.
    let ring = Ring::new(0, QUEUE_SIZE);
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    fe.set_vring_addr(0, &ring.config()).unwrap();
    fe.set_vring_kick(0, &kick).unwrap();
    kick.write(1).unwrap();
    // Features the backend never offered are refused (no ack requested: the backend
    // logs it and goes on).
    fe.set_features(1 << 63).unwrap();
    let _ = Frontend::get_features(&fe);
    drop(fe);
    assert!(matches!(served.join(), ConnectionEnd::Disconnected));
}

#[test]
fn bind_replaces_only_stale_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let live = crate::bind(&path).unwrap();
    assert!(matches!(
        crate::bind(&path),
        Err(crate::ServerError::InUse { .. })
    ));
    drop(live);
    // The file is left behind, nobody listens: stale, replaced.
    assert!(path.exists());
    let _again = crate::bind(&path).unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"keep").unwrap();
    assert!(matches!(
        crate::bind(&file),
        Err(crate::ServerError::NotASocket { .. })
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
}
