//! virtio-blk behind vhost-user: negotiation, configuration, requests through a real
//! split ring, interrupt suppression, reconnection.

use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;
use virtio::features::{RING_EVENT_IDX, RING_INDIRECT_DESC, VERSION_1};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::Backend;

pub const DISK_SIZE: u64 = 1 << 20;
const HEADER: u64 = 0x10000;
const DATA: u64 = 0x11000;
const STATUS: u64 = 0x13000;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;

pub fn disk_image(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("disk.raw");
    let pattern: Vec<u8> = (0..DISK_SIZE).map(|i| (i / 512) as u8).collect();
    std::fs::write(&path, pattern).unwrap();
    path
}

pub fn blk_backend(path: &Path) -> Arc<Backend> {
    let image = block::open(path, &block::OpenOptions::default()).unwrap();
    let device = virtio::blk::Block::new(image, "vhost-test");
    Arc::new(Backend::new(Box::new(device), 1, None).unwrap())
}

/// Put a read or write request of one 4 KiB block at `sector` on `ring`.
pub fn request(guest: &Guest, ring: &mut Ring, kind: u32, sector: u64) {
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&kind.to_le_bytes());
    header[8..16].copy_from_slice(&sector.to_le_bytes());
    guest
        .mem
        .write_slice(&header, GuestAddress(HEADER))
        .unwrap();
    guest.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    ring.push(
        &guest.mem,
        &[
            (HEADER, 16, false),
            (DATA, 4096, kind == T_IN),
            (STATUS, 1, true),
        ],
    );
}

fn status(guest: &Guest) -> u8 {
    guest.mem.read_obj(GuestAddress(STATUS)).unwrap()
}

/// A frontend with memory and queue 0 running.
pub fn ready(backend: &Arc<Backend>) -> (Frontend, Served, Guest, Ring, EventFd, EventFd) {
    let (mut fe, served) = serve(backend);
    negotiate(&mut fe);
    let guest = Guest::new();
    fe.set_mem_table(&[guest.region()]).unwrap();
    let ring = Ring::new(0, QUEUE_SIZE);
    let (kick, call) = start_ring(&mut fe, 0, &ring);
    (fe, served, guest, ring, kick, call)
}

#[test]
fn negotiation_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    let (mut fe, served) = serve(&backend);
    let features = negotiate(&mut fe);
    for bit in [
        VERSION_1,
        RING_EVENT_IDX,
        RING_INDIRECT_DESC,
        VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
    ] {
        assert_ne!(features & bit, 0, "feature {bit:#x} not offered");
    }
    assert_eq!(fe.get_queue_num().unwrap(), 1);
    assert!(fe
        .get_protocol_features()
        .unwrap()
        .contains(VhostUserProtocolFeatures::CONFIG));
    let (_, config) = fe
        .get_config(0, 60, VhostUserConfigFlags::WRITABLE, &[0; 60])
        .unwrap();
    let capacity = u64::from_le_bytes(config[0..8].try_into().unwrap());
    assert_eq!(capacity, DISK_SIZE / 512);
    let blk_size = u32::from_le_bytes(config[20..24].try_into().unwrap());
    assert_eq!(blk_size, 512);
    drop(fe);
    assert!(matches!(served.join(), ConnectionEnd::Disconnected));
}

#[test]
fn read_and_write_through_a_split_ring() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk_image(dir.path());
    let backend = blk_backend(&path);
    let (fe, served, guest, mut ring, kick, call) = ready(&backend);

    request(&guest, &mut ring, T_IN, 8);
    kick.write(1).unwrap();
    assert!(readable(&call, 5000), "no interrupt for the read");
    ring.wait_used(&guest.mem, 1);
    assert_eq!(ring.used_elem(&guest.mem, 0), (0, 4097));
    assert_eq!(status(&guest), 0);
    let mut data = vec![0u8; 4096];
    guest.mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
    assert!(data[..512].iter().all(|&b| b == 8) && data[3584..].iter().all(|&b| b == 15));

    guest
        .mem
        .write_slice(&[0xa5; 4096], GuestAddress(DATA))
        .unwrap();
    call.read().unwrap();
    // EVENT_IDX was negotiated: ask for the next interrupt, as a driver does.
    ring.set_used_event(&guest.mem, 1);
    request(&guest, &mut ring, T_OUT, 16);
    kick.write(1).unwrap();
    assert!(readable(&call, 5000), "no interrupt for the write");
    ring.wait_used(&guest.mem, 2);
    assert_eq!(status(&guest), 0);
    drop(fe);
    assert!(matches!(served.join(), ConnectionEnd::Disconnected));
    let file = std::fs::File::open(&path).unwrap();
    let mut on_disk = vec![0u8; 4096];
    file.read_exact_at(&mut on_disk, 16 * 512).unwrap();
    assert_eq!(on_disk, vec![0xa5; 4096]);
}

#[test]
fn event_idx_suppresses_calls() {
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    let (_fe, served, guest, mut ring, kick, call) = ready(&backend);
    // Interrupt only once the used index passes 1: after the second request.
    ring.set_used_event(&guest.mem, 1);
    request(&guest, &mut ring, T_IN, 0);
    kick.write(1).unwrap();
    ring.wait_used(&guest.mem, 1);
    assert!(!readable(&call, 200), "call despite used_event");
    request(&guest, &mut ring, T_IN, 0);
    kick.write(1).unwrap();
    ring.wait_used(&guest.mem, 2);
    assert!(readable(&call, 5000), "no call once used_event was passed");
    // The device asked for a kick at the next available entry (avail_event).
    let avail_event: u16 = guest
        .mem
        .read_obj(GuestAddress(USED + 4 + 8 * u64::from(QUEUE_SIZE)))
        .unwrap();
    assert_eq!(avail_event, 2);
    served.end();
}

#[test]
fn stop_and_resume_at_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    let (fe, served, guest, mut ring, kick, _call) = ready(&backend);
    request(&guest, &mut ring, T_IN, 0);
    kick.write(1).unwrap();
    ring.wait_used(&guest.mem, 1);
    // GET_VRING_BASE stops the ring and reports where it stood.
    assert_eq!(fe.get_vring_base(0).unwrap(), 1);
    request(&guest, &mut ring, T_IN, 0);
    kick.write(1).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(ring.used_idx(&guest.mem), 1, "a stopped ring ran");
    // Restart at the reported base: the pending request runs.
    fe.set_vring_base(0, 1).unwrap();
    let kick2 = EventFd::new(EFD_NONBLOCK).unwrap();
    fe.set_vring_kick(0, &kick2).unwrap();
    ring.wait_used(&guest.mem, 2);
    served.end();
}

#[test]
fn reconnects_after_the_frontend_drops_mid_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk_image(dir.path());
    let backend = blk_backend(&path);
    let sock = dir.path().join("blk.sock");
    let listener = crate::bind(&sock).unwrap();
    let stop = Stop::new();
    let stop_rx = stop.rx.try_clone().unwrap();
    let server = {
        let backend = backend.clone();
        std::thread::spawn(move || backend.serve(&listener, std::os::fd::AsFd::as_fd(&stop_rx)))
    };

    for round in 0..3u8 {
        let mut fe = Frontend::from_stream(UnixStream::connect(&sock).unwrap(), 64);
        negotiate(&mut fe);
        let guest = Guest::new();
        fe.set_mem_table(&[guest.region()]).unwrap();
        let mut ring = Ring::new(0, QUEUE_SIZE);
        let (kick, call) = start_ring(&mut fe, 0, &ring);
        // A fresh session: rings start at 0 again.
        guest
            .mem
            .write_slice(&[round; 4096], GuestAddress(DATA))
            .unwrap();
        request(&guest, &mut ring, T_OUT, 32 + u64::from(round) * 8);
        kick.write(1).unwrap();
        assert!(readable(&call, 5000), "round {round}: no interrupt");
        assert_eq!(status(&guest), 0);
        // Another request, and the frontend vanishes without waiting for it.
        request(&guest, &mut ring, T_IN, 0);
        kick.write(1).unwrap();
        drop(fe);
    }
    stop.stop();
    server.join().unwrap().unwrap();
    let file = std::fs::File::open(&path).unwrap();
    for round in 0..3u8 {
        let mut block = vec![0u8; 4096];
        file.read_exact_at(&mut block, (32 + u64::from(round) * 8) * 512)
            .unwrap();
        assert_eq!(block, vec![round; 4096]);
    }
}

#[test]
fn rings_start_disabled_until_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    let (mut fe, served) = serve(&backend);
    negotiate(&mut fe);
    let guest = Guest::new();
    fe.set_mem_table(&[guest.region()]).unwrap();
    let mut ring = Ring::new(0, QUEUE_SIZE);
    let (kick, _call) = start_ring_disabled(&mut fe, 0, &ring);
    request(&guest, &mut ring, T_IN, 0);
    kick.write(1).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(ring.used_idx(&guest.mem), 0, "a disabled ring ran");
    fe.set_vring_enable(0, true).unwrap();
    ring.wait_used(&guest.mem, 1);
    served.end();
}

/// `backend` serving `theirs` on a thread until the returned [`Stop`] says so.
fn serve_on(
    backend: &Arc<Backend>,
    theirs: UnixStream,
) -> (Stop, std::thread::JoinHandle<ConnectionEnd>) {
    let stop = Stop::new();
    let stop_rx = stop.rx.try_clone().unwrap();
    let backend = backend.clone();
    let server = std::thread::spawn(move || {
        backend
            .serve_connection(theirs, std::os::fd::AsFd::as_fd(&stop_rx))
            .unwrap()
    });
    (stop, server)
}

/// QEMU's vhost-user-net enables rings before SET_FEATURES acknowledged
/// VHOST_USER_F_PROTOCOL_FEATURES and does not repeat it after starting them.
#[test]
fn vring_enable_before_set_features_counts() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (stop, server) = serve_on(&backend, theirs);
    // SET_VRING_ENABLE (18), version 1, 8-byte body: queue 0, enable.
    let mut raw = Vec::new();
    for word in [18u32, 1, 8, 0, 1] {
        raw.extend_from_slice(&word.to_le_bytes());
    }
    (&ours).write_all(&raw).unwrap();
    let mut fe = Frontend::from_stream(ours, 64);
    negotiate(&mut fe);
    let guest = Guest::new();
    fe.set_mem_table(&[guest.region()]).unwrap();
    let mut ring = Ring::new(0, QUEUE_SIZE);
    let (kick, _call) = start_ring_disabled(&mut fe, 0, &ring);
    request(&guest, &mut ring, T_IN, 0);
    kick.write(1).unwrap();
    ring.wait_used(&guest.mem, 1);
    stop.stop();
    assert!(matches!(server.join().unwrap(), ConnectionEnd::Stopped));
}

/// A ring without a kick fd (VHOST_USER_VRING_NOFD_MASK) is polled by the worker: its
/// requests run though nobody kicks.
#[test]
fn a_ring_without_a_kick_fd_is_polled() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    let (ours, theirs) = UnixStream::pair().unwrap();
    let raw = ours.try_clone().unwrap();
    let (stop, server) = serve_on(&backend, theirs);
    let mut fe = Frontend::from_stream(ours, 64);
    negotiate(&mut fe);
    let guest = Guest::new();
    fe.set_mem_table(&[guest.region()]).unwrap();
    let mut ring = Ring::new(0, QUEUE_SIZE);
    let call = EventFd::new(EFD_NONBLOCK).unwrap();
    fe.set_vring_num(0, ring.size).unwrap();
    fe.set_vring_base(0, 0).unwrap();
    fe.set_vring_addr(0, &ring.config()).unwrap();
    fe.set_vring_call(0, &call).unwrap();
    // SET_VRING_KICK (12), version 1, no reply asked, 8-byte body: queue 0 | NOFD (0x100).
    let mut msg = Vec::new();
    for word in [12u32, 1, 8, 0x100, 0] {
        msg.extend_from_slice(&word.to_le_bytes());
    }
    (&raw).write_all(&msg).unwrap();
    // Acknowledged, so handled after the kick message.
    fe.set_vring_enable(0, true).unwrap();
    for n in 1..=3 {
        request(&guest, &mut ring, T_IN, 0);
        ring.wait_used(&guest.mem, n);
        assert_eq!(status(&guest), 0);
    }
    assert!(readable(&call, 5000), "no interrupt");
    stop.stop();
    assert!(matches!(server.join().unwrap(), ConnectionEnd::Stopped));
}

/// The log bits of a dirty log of `len` bytes in `file`.
fn log_bits(file: &std::fs::File, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0).unwrap();
    bytes
}

fn page_logged(log: &[u8], addr: u64) -> bool {
    let page = (addr / 4096) as usize;
    log[page / 8] & (1 << (page % 8)) != 0
}

/// A migrating frontend (QEMU): LOG_SHMFD negotiated, SET_LOG_BASE with a sealed memfd,
/// LOG_ALL acked and the ring's addresses sent again while it runs. The pages the backend
/// writes (data read from the disk, the status byte, the used ring) are set in the log;
/// the header it only reads is not; with LOG_ALL off again nothing more is logged.
#[test]
fn pages_the_backend_writes_are_logged_while_log_all_is_acked() {
    let dir = tempfile::tempdir().unwrap();
    let backend = blk_backend(&disk_image(dir.path()));
    let (mut fe, served) = serve(&backend);
    fe.set_owner().unwrap();
    let offered = fe.get_features().unwrap();
    let log_all = VhostUserVirtioFeatures::LOG_ALL.bits();
    assert_ne!(offered & log_all, 0, "LOG_ALL is offered");
    fe.set_features(offered & !log_all).unwrap();
    let proto = fe.get_protocol_features().unwrap();
    assert!(proto.contains(VhostUserProtocolFeatures::LOG_SHMFD));
    let wanted = VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::LOG_SHMFD;
    fe.set_protocol_features(proto & wanted).unwrap();
    // Every later message is acked, so the backend has handled it when the call returns.
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    let guest = Guest::new();
    fe.set_mem_table(&[guest.region()]).unwrap();
    let mut ring = Ring::new(0, QUEUE_SIZE);
    let (kick, call) = start_ring(&mut fe, 0, &ring);

    let log_len = 4096usize;
    let log = memfd(log_len as u64);
    let region = vhost::VhostUserDirtyLogRegion {
        mmap_size: log_len as u64,
        mmap_offset: 0,
        mmap_handle: log.as_raw_fd(),
    };
    fe.set_log_base(0, Some(region)).unwrap();
    fe.set_features(offered).unwrap();
    fe.set_vring_addr(0, &ring.config()).unwrap();
    request(&guest, &mut ring, T_IN, 0);
    kick.write(1).unwrap();
    assert!(readable(&call, 5000), "no interrupt");
    ring.wait_used(&guest.mem, 1);
    let bits = log_bits(&log, log_len);
    assert!(page_logged(&bits, DATA), "the data read from the disk");
    assert!(page_logged(&bits, STATUS), "the status byte");
    assert!(
        page_logged(&bits, ring.config().used_ring_addr - FRONTEND_VA),
        "the used ring"
    );
    assert!(!page_logged(&bits, HEADER), "the header is only read");

    fe.set_features(offered & !log_all).unwrap();
    log.write_all_at(&vec![0; log_len], 0).unwrap();
    // EVENT_IDX: the driver here never moves used_event, so no second interrupt.
    request(&guest, &mut ring, T_IN, 8);
    kick.write(1).unwrap();
    ring.wait_used(&guest.mem, 2);
    assert!(
        !page_logged(&log_bits(&log, log_len), DATA),
        "logged without LOG_ALL"
    );
    drop(fe);
    served.join();
}
