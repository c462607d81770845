//! Moves frames between two backends on a thread of its own: the NIC side of a test
//! namespace's tap and a vessel backend, or a switch port and a NAT.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use virtio::net::MAX_FRAME_LEN;

use crate::Backend;

/// Frames moved per direction before looking at the other one.
const BURST: usize = 64;
/// How long a refused frame is retried before it is dropped.
const SEND_RETRY_MS: i32 = 1000;

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

fn poll_one(fd: RawFd, events: libc::c_short, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, timeout_ms) > 0 }
}

/// Move up to a burst of frames from `from` to `to`; returns whether `from` may have more.
fn pump(
    from: &mut dyn Backend,
    to: &mut dyn Backend,
    buf: &mut [u8],
    moved: &AtomicU64,
    dropped: &AtomicU64,
) -> bool {
    for _ in 0..BURST {
        let len = match from.recv(buf) {
            Ok(Some(len)) => len,
            Ok(None) | Err(_) => return false,
        };
        let mut sent = false;
        for _ in 0..2 {
            match to.send(&buf[..len]) {
                Ok(true) => {
                    sent = true;
                    break;
                }
                Ok(false) => {
                    poll_one(to.as_raw_fd(), libc::POLLOUT, SEND_RETRY_MS);
                }
                Err(_) => break,
            }
        }
        let counter = if sent { moved } else { dropped };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    true
}

impl Relay {
    /// Start relaying between `a` and `b` until dropped.
    pub fn start(mut a: Box<dyn Backend>, mut b: Box<dyn Backend>) -> io::Result<Self> {
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
            .spawn(move || {
                let mut buf = vec![0u8; MAX_FRAME_LEN];
                loop {
                    let mut fds = [
                        libc::pollfd {
                            fd: a.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        libc::pollfd {
                            fd: b.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        libc::pollfd {
                            fd: stop_fd,
                            events: libc::POLLIN,
                            revents: 0,
                        },
                    ];
                    // SAFETY: three valid pollfds for the duration of the call.
                    let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, 1000) };
                    if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                        return;
                    }
                    if fds[2].revents != 0 {
                        return;
                    }
                    let _ = a.flush();
                    let _ = b.flush();
                    // A peer that hung up is polled no more than once a second.
                    if fds[0].revents & libc::POLLIN != 0 {
                        pump(&mut *a, &mut *b, &mut buf, &s.a_to_b, &s.dropped);
                    }
                    if fds[1].revents & libc::POLLIN != 0 {
                        pump(&mut *b, &mut *a, &mut buf, &s.b_to_a, &s.dropped);
                    }
                    if (fds[0].revents | fds[1].revents) & (libc::POLLHUP | libc::POLLERR) != 0
                        && (fds[0].revents | fds[1].revents) & libc::POLLIN == 0
                    {
                        poll_one(stop_fd, libc::POLLIN, 100);
                    }
                }
            })?;
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
