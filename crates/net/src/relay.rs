//! Moves frames between two backends on a thread of its own: the NIC side of a test
//! namespace's tap and a vessel backend, or a switch port and a NAT. Never blocks on a
//! full side: a refused frame is held, its source is not read until the destination
//! turns writable, and the other direction keeps flowing (both peers may be waiting for
//! each other to read).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use virtio::net::MAX_FRAME_LEN;

use crate::Backend;

/// Frames moved per direction before looking at the other one.
const BURST: usize = 64;

/// Frames moved each way and frames dropped.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub a_to_b: AtomicU64,
    pub b_to_a: AtomicU64,
    pub dropped: AtomicU64,
}

/// A running relay; dropping it stops the thread.
pub struct Relay {
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<RelayStats>,
}

/// One direction: frames from `from` to `to`, with the frame `to` refused last.
struct Direction {
    buf: Vec<u8>,
    held: Option<usize>,
    /// `from` may hold frames its fd does not report.
    more: bool,
}

impl Direction {
    fn new() -> Self {
        Self {
            buf: vec![0u8; MAX_FRAME_LEN],
            held: None,
            more: false,
        }
    }

    /// Move frames until `from` is empty, `to` is full, or a burst is done.
    fn pump(
        &mut self,
        from: &mut dyn Backend,
        to: &mut dyn Backend,
        moved: &AtomicU64,
        dropped: &AtomicU64,
    ) {
        self.more = false;
        for _ in 0..BURST {
            let len = match self.held.take() {
                Some(len) => len,
                None => match from.recv(&mut self.buf) {
                    Ok(Some(len)) => len,
                    Ok(None) | Err(_) => return,
                },
            };
            match to.send(&self.buf[..len]) {
                Ok(true) => {
                    moved.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {
                    self.held = Some(len);
                    return;
                }
                Err(_) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.more = true;
    }

    /// Events to wait for: input on the source unless a frame is held, room on the
    /// destination when one is (a destination whose fd is a poll set, as `natnet`'s,
    /// reports room as input).
    fn wants(&self) -> (libc::c_short, libc::c_short) {
        if self.held.is_some() {
            (0, libc::POLLOUT | libc::POLLIN)
        } else {
            (libc::POLLIN, 0)
        }
    }
}

fn run(mut a: Box<dyn Backend>, mut b: Box<dyn Backend>, stop_fd: RawFd, s: &RelayStats) {
    let mut ab = Direction::new();
    let mut ba = Direction::new();
    loop {
        let (a_in, b_out) = ab.wants();
        let (b_in, a_out) = ba.wants();
        let mut fds = [
            libc::pollfd {
                fd: a.as_raw_fd(),
                events: a_in | a_out,
                revents: 0,
            },
            libc::pollfd {
                fd: b.as_raw_fd(),
                events: b_in | b_out,
                revents: 0,
            },
            libc::pollfd {
                fd: stop_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = if ab.more || ba.more { 0 } else { 1000 };
        // SAFETY: three valid pollfds for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, timeout) };
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
        if fds[2].revents != 0 {
            return;
        }
        let (ra, rb) = (fds[0].revents, fds[1].revents);
        if ra & libc::POLLOUT != 0 {
            let _ = a.flush();
        }
        if rb & libc::POLLOUT != 0 {
            let _ = b.flush();
        }
        let ready =
            |r: libc::c_short, ev: libc::c_short| r & (ev | libc::POLLHUP | libc::POLLERR) != 0;
        if ab.more || ready(ra, a_in) || ready(rb, b_out) {
            ab.pump(&mut *a, &mut *b, &s.a_to_b, &s.dropped);
        }
        if ba.more || ready(rb, b_in) || ready(ra, a_out) {
            ba.pump(&mut *b, &mut *a, &s.b_to_a, &s.dropped);
        }
        // A peer that hung up is not polled more than ten times a second.
        if (ra | rb) & (libc::POLLHUP | libc::POLLERR) != 0 {
            let mut p = libc::pollfd {
                fd: stop_fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut p, 1, 100) };
        }
    }
}

impl Relay {
    /// Start relaying between `a` and `b` until dropped.
    pub fn start(a: Box<dyn Backend>, b: Box<dyn Backend>) -> io::Result<Self> {
        // SAFETY: eventfd with valid flags; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd owned by nobody else.
        let stop = unsafe { OwnedFd::from_raw_fd(raw) };
        let stop_fd = stop.as_raw_fd();
        let stats = Arc::new(RelayStats::default());
        let s = stats.clone();
        let thread = std::thread::Builder::new()
            .name("vessel-net-relay".into())
            .spawn(move || run(a, b, stop_fd, &s))?;
        Ok(Self {
            stop,
            thread: Some(thread),
            stats,
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), 8) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
