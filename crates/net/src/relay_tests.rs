//! The relay's loop with the two ends of datagram socket pairs as backends: a held frame
//! waits for room while the other direction flows, dropping stops a relay holding one,
//! a hung-up side is looked at ten times a second, not in a busy loop.

use std::net::Shutdown;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use super::*;

const WAIT: Duration = Duration::from_secs(5);

/// A backend whose frames are the datagrams of one end of a socket pair.
struct Dgram {
    sock: UnixDatagram,
    /// Calls of `recv`.
    recvs: Arc<AtomicUsize>,
}

impl Backend for Dgram {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.recvs.fetch_add(1, Ordering::Relaxed);
        match self.sock.recv(buf) {
            // Shut down: nothing more will come.
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        match self.sock.send(frame) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// One side: the backend for the relay, the peer the test plays, the backend's reads.
fn side() -> (Dgram, UnixDatagram, Arc<AtomicUsize>) {
    let (ours, peer) = UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let recvs = Arc::new(AtomicUsize::new(0));
    let backend = Dgram {
        sock: ours,
        recvs: recvs.clone(),
    };
    (backend, peer, recvs)
}

/// Queue datagrams from `backend` to its peer until the peer's queue is full: the
/// backend then refuses frames. Returns how many were queued.
fn fill(backend: &Dgram) -> usize {
    let mut n = 0;
    while backend.sock.send(b"fill").is_ok() {
        n += 1;
    }
    n
}

fn recv(peer: &UnixDatagram) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let n = peer.recv(&mut buf).unwrap();
    buf[..n].to_vec()
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_held_frame_waits_for_room_while_the_other_way_flows() {
    let (a, a_peer, _) = side();
    let (b, b_peer, _) = side();
    let filled = fill(&b);
    let relay = Relay::start(Box::new(a), Box::new(b)).unwrap();
    a_peer.send(b"to b").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        relay.stats.a_to_b.load(Ordering::Relaxed),
        0,
        "b had no room"
    );
    assert_eq!(relay.stats.dropped.load(Ordering::Relaxed), 0);
    // The held frame does not stop the other direction.
    b_peer.send(b"to a").unwrap();
    assert_eq!(recv(&a_peer), b"to a");
    // Room on b: the held frame goes, after what filled it.
    for _ in 0..filled {
        assert_eq!(recv(&b_peer), b"fill");
    }
    assert_eq!(recv(&b_peer), b"to b");
    assert_eq!(relay.stats.a_to_b.load(Ordering::Relaxed), 1);
    assert_eq!(relay.stats.b_to_a.load(Ordering::Relaxed), 1);
    // And a is read again.
    a_peer.send(b"again").unwrap();
    assert_eq!(recv(&b_peer), b"again");
}

#[test]
fn dropping_stops_a_relay_holding_a_frame() {
    let (a, a_peer, _) = side();
    let (b, _b_peer, _) = side();
    fill(&b);
    let relay = Relay::start(Box::new(a), Box::new(b)).unwrap();
    a_peer.send(b"held").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(relay.stats.a_to_b.load(Ordering::Relaxed), 0);
    let start = Instant::now();
    drop(relay);
    let took = start.elapsed();
    assert!(took < Duration::from_millis(500), "stopping took {took:?}");
}

#[test]
fn a_hung_up_side_is_not_polled_in_a_busy_loop() {
    let (a, _a_peer, a_recvs) = side();
    let (b, b_peer, _) = side();
    let a_sock = a.sock.try_clone().unwrap();
    let relay = Relay::start(Box::new(a), Box::new(b)).unwrap();
    a_sock.shutdown(Shutdown::Both).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let before = a_recvs.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    let reads = a_recvs.load(Ordering::Relaxed) - before;
    assert!(
        (1..=12).contains(&reads),
        "{reads} reads of a hung-up side in 500 ms"
    );
    // b is still served: its frames for the hung-up side are dropped.
    b_peer.send(b"lost").unwrap();
    wait_until("b's frame was not taken", || {
        relay.stats.dropped.load(Ordering::Relaxed) == 1
    });
    let start = Instant::now();
    drop(relay);
    assert!(start.elapsed() < Duration::from_millis(500));
}
