//! A NIC backend with an in-VMM network stack on its wire (the MMDS endpoint, the run-time
//! forward relay): the guest frames the stack claims go to it instead of (or besides) the
//! backend, and the stack's frames reach the guest ahead of the backend's.
//!
//! The I/O thread polls one fd per backend, so this one is an epoll set holding the
//! backend's fd, an eventfd raised when the stack has frames (or news from another
//! thread), and the stack's own fds: any readiness makes the set readable, and the device
//! then runs its queues (receive takes the stack's frames first).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::Backend;
use virtio::net::{GuestOffloads, NET_HDR_LEN};

/// Where a frame from the guest goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steer {
    /// To the backend only, as without the stack.
    Backend,
    /// To the stack only.
    Stack,
    /// To both (an ARP reply the backend may have asked for too).
    Both,
}

/// An in-VMM stack on a guest's wire.
pub trait WireStack: Send {
    /// Where the guest's `frame` goes.
    fn steer(&mut self, frame: &[u8]) -> Steer;
    /// Takes a frame [`Self::steer`] gave it; whether frames now wait for the guest.
    fn receive(&mut self, frame: &[u8]) -> bool;
    /// Runs the stack when it has work; its next frame for the guest.
    fn next_frame(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// Sees a frame the backend passes to the guest.
    fn learn(&mut self, _frame: &[u8]) {}
    /// More fds whose readability is work for the stack (host sockets, timers).
    fn fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    /// Consumes those fds' level readiness (a timer's expiry count).
    fn clear(&self) {}
}

pub struct DivertingNic<S> {
    inner: Box<dyn Backend>,
    stack: S,
    ready: Epoll,
    wake: Arc<EventFd>,
}

impl<S: WireStack> DivertingNic<S> {
    /// `inner` with `stack` on its wire.
    pub fn new(inner: Box<dyn Backend>, stack: S) -> io::Result<Self> {
        let ready = Epoll::new()?;
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        // Edge-triggered like the I/O thread's own registration: every new readiness of
        // the backend (either way) wakes the set once.
        let mut watched = vec![
            (inner.as_raw_fd(), EventSet::IN | EventSet::OUT),
            (wake.as_raw_fd(), EventSet::IN),
        ];
        watched.extend(stack.fds().into_iter().map(|fd| (fd, EventSet::IN)));
        for (fd, events) in watched {
            let event = EpollEvent::new(events | EventSet::EDGE_TRIGGERED, fd as u64);
            ready.ctl(ControlOperation::Add, fd, event)?;
        }
        Ok(Self {
            inner,
            stack,
            ready,
            wake,
        })
    }

    /// The eventfd that wakes the device: another thread that changed the stack raises it.
    pub fn waker(&self) -> Arc<EventFd> {
        self.wake.clone()
    }

    /// Empties the set's ready list, so that only new readiness wakes the I/O thread.
    fn clear_readiness(&self) {
        let mut events = [EpollEvent::default(); 8];
        while matches!(self.ready.wait(0, &mut events), Ok(n) if n > 0) {}
        let _ = self.wake.read();
        self.stack.clear();
    }

    /// Gives the stack what it claims; whether the backend gets nothing.
    fn divert(&mut self, frame: &[u8]) -> bool {
        let steer = self.stack.steer(frame);
        if steer != Steer::Backend && self.stack.receive(frame) {
            let _ = self.wake.write(1);
        }
        steer == Steer::Stack
    }
}

impl<S: WireStack> Backend for DivertingNic<S> {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let mut header = [0u8; NET_HDR_LEN];
        self.recv_with_header(&mut header, buf)
    }

    /// The stack's frames first, then the backend's. Readiness is cleared only when both
    /// are empty, and both are asked again after that, so news that came meanwhile is
    /// taken now or wakes the I/O thread again.
    fn recv_with_header(
        &mut self,
        header: &mut [u8; NET_HDR_LEN],
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        for attempt in 0..2 {
            if let Some(n) = self.stack.next_frame(buf) {
                // Full checksums, no segmentation.
                header.fill(0);
                return Ok(Some(n));
            }
            let got = self.inner.recv_with_header(header, buf)?;
            if let Some(n) = got {
                if let Some(frame) = buf.get(..n) {
                    self.stack.learn(frame);
                }
                return Ok(got);
            }
            if attempt == 0 {
                self.clear_readiness();
            }
        }
        Ok(None)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        if self.divert(frame) {
            return Ok(true);
        }
        self.inner.send(frame)
    }

    fn send_with_header(&mut self, header: &[u8; NET_HDR_LEN], frame: &[u8]) -> io::Result<bool> {
        if self.divert(frame) {
            return Ok(true);
        }
        self.inner.send_with_header(header, frame)
    }

    fn flush(&mut self) -> io::Result<bool> {
        self.inner.flush()
    }

    fn as_raw_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }

    fn mtu(&self) -> Option<u16> {
        self.inner.mtu()
    }

    fn offloads(&self) -> bool {
        self.inner.offloads()
    }

    fn set_guest_offloads(&mut self, offloads: GuestOffloads) -> io::Result<()> {
        self.inner.set_guest_offloads(offloads)
    }
}

/// The backend end of a datagram socketpair, for the wrappers' tests; the test holds the
/// other end.
#[cfg(test)]
pub(crate) mod test_backend {

    use std::os::fd::RawFd;
    use std::os::unix::net::UnixDatagram;

    use crate::Backend;

    /// A backend and the test's end of its wire, both non-blocking.
    pub fn pair() -> (Box<dyn Backend>, UnixDatagram) {
        let (ours, theirs) = virtio::net::DatagramBackend::pair().unwrap();
        (Box::new(ours), theirs)
    }

    /// Whether `fd` is readable within `wait_ms`.
    pub fn readable(fd: RawFd, wait_ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, wait_ms) == 1 }
    }
}
