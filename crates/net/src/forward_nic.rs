//! A `nat` NIC's backend with the run-time forward relay ([`crate::forward_relay`]) on its
//! wire: guest frames of the relay's connections go to it (ARP replies to the gateway to
//! both), the relay's frames reach the guest ahead of passt's, and passt's frames teach it
//! the gateway's MAC. [`ForwardControl`] adds and removes forwards from another thread
//! (the API's).
//!
//! The I/O thread polls one fd: an epoll set of passt's fd, the relay's host sockets, a
//! timer for smoltcp's retransmissions and idle limits, and an eventfd raised when the
//! relay has frames or its forwards changed.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::config::Forward;
use crate::forward_frames::Steer;
use crate::forward_relay::{LiveForward, Relay, RelayError};
use crate::Backend;
use virtio::net::{GuestOffloads, NET_HDR_LEN};

#[derive(Debug, thiserror::Error)]
pub enum ForwardNicError {
    #[error("cannot set up the run-time forward relay's fds: {0}")]
    Fds(#[source] io::Error),
}

fn lock(relay: &Mutex<Relay>) -> MutexGuard<'_, Relay> {
    relay.lock().unwrap_or_else(|p| p.into_inner())
}

/// Adds, removes and lists a NIC's run-time forwards; cheap to clone, usable from any
/// thread.
#[derive(Clone)]
pub struct ForwardControl {
    relay: Arc<Mutex<Relay>>,
    wake: Arc<EventFd>,
}

impl ForwardControl {
    /// Forwards `forward` from `listener`, a TCP socket listening where the forward says.
    pub fn add(&self, forward: Forward, listener: OwnedFd) -> Result<(), RelayError> {
        lock(&self.relay).add(forward, listener)?;
        let _ = self.wake.write(1);
        Ok(())
    }

    /// Removes the forward on `host_port`, resetting its connections.
    pub fn remove(&self, host_port: u16) -> Result<Forward, RelayError> {
        let removed = lock(&self.relay).remove(host_port)?;
        // The I/O thread sends the resets.
        let _ = self.wake.write(1);
        Ok(removed)
    }

    pub fn list(&self) -> Vec<LiveForward> {
        lock(&self.relay).forwards()
    }
}

pub struct ForwardNic {
    inner: Box<dyn Backend>,
    relay: Arc<Mutex<Relay>>,
    ready: Epoll,
    wake: Arc<EventFd>,
    timer: OwnedFd,
    /// Whether `timer` may fire (then it is rearmed or disarmed after each run).
    timer_armed: bool,
}

fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create with valid flags; the result is checked.
    let raw = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Lets `timer` fire after `delay` (or never).
fn arm(timer: &OwnedFd, delay: Option<Duration>) {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut spec = libc::itimerspec {
        it_interval: zero,
        it_value: zero,
    };
    if let Some(d) = delay {
        // A zero value disarms: at least a nanosecond.
        spec.it_value.tv_sec = libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX);
        spec.it_value.tv_nsec = libc::c_long::from(d.subsec_nanos().max(1));
    }
    // SAFETY: a valid itimerspec for the call on our timerfd; no old value asked.
    unsafe { libc::timerfd_settime(timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
}

impl ForwardNic {
    /// `inner` (passt, whose guest is at `guest_ip` behind `gateway`) with the relay on
    /// its wire, and the control of its forwards.
    pub fn new(
        inner: Box<dyn Backend>,
        guest_ip: Ipv4Addr,
        gateway: Ipv4Addr,
    ) -> Result<(Self, ForwardControl), ForwardNicError> {
        let relay = Relay::new(guest_ip, gateway).map_err(ForwardNicError::Fds)?;
        let ready = Epoll::new().map_err(ForwardNicError::Fds)?;
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(ForwardNicError::Fds)?);
        let timer = timerfd().map_err(ForwardNicError::Fds)?;
        // Edge-triggered like the I/O thread's own registration: every new readiness of
        // the backend (either way) wakes the set once.
        let watched = [
            (inner.as_raw_fd(), EventSet::IN | EventSet::OUT),
            (wake.as_raw_fd(), EventSet::IN),
            (timer.as_raw_fd(), EventSet::IN),
            (relay.host_fd(), EventSet::IN),
        ];
        for (fd, events) in watched {
            ready
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(events | EventSet::EDGE_TRIGGERED, fd as u64),
                )
                .map_err(ForwardNicError::Fds)?;
        }
        let relay = Arc::new(Mutex::new(relay));
        let control = ForwardControl {
            relay: relay.clone(),
            wake: wake.clone(),
        };
        Ok((
            Self {
                inner,
                relay,
                ready,
                wake,
                timer,
                timer_armed: false,
            },
            control,
        ))
    }

    /// Empties the set's ready list, so that only new readiness wakes the I/O thread.
    fn clear_readiness(&self) {
        let mut events = [EpollEvent::default(); 8];
        while matches!(self.ready.wait(0, &mut events), Ok(n) if n > 0) {}
        let _ = self.wake.read();
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into a live buffer from our non-blocking timerfd.
        unsafe { libc::read(self.timer.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
    }

    /// Runs the relay and rearms its timer; its next frame for the guest, if any.
    fn relay_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        let mut relay = lock(&self.relay);
        if !relay.has_forwards() && !relay.has_connections() && !relay.has_output() {
            return None;
        }
        if !relay.has_output() {
            relay.service();
        }
        let frame = relay.next_frame(buf);
        let now = relay.now();
        let delay = relay.poll_delay(now);
        if delay.is_some() || self.timer_armed {
            arm(&self.timer, delay);
            self.timer_armed = delay.is_some();
        }
        frame
    }

    /// Sends `frame` where it belongs; `Ok(true)` when the relay alone took it.
    fn divert(&mut self, frame: &[u8]) -> bool {
        let mut relay = lock(&self.relay);
        let steer = relay.steer(frame);
        if steer != Steer::Backend {
            relay.receive_frame(frame);
            if relay.has_output() {
                let _ = self.wake.write(1);
            }
        }
        steer == Steer::Relay
    }
}

impl Backend for ForwardNic {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let mut header = [0u8; NET_HDR_LEN];
        self.recv_with_header(&mut header, buf)
    }

    /// The relay's frames first, then the backend's (the relay learns the gateway's MAC
    /// from them). Readiness is cleared only when both are empty, and both are asked
    /// again after that, so news that came meanwhile is taken now or wakes the I/O thread.
    fn recv_with_header(
        &mut self,
        header: &mut [u8; NET_HDR_LEN],
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        for attempt in 0..2 {
            if let Some(n) = self.relay_frame(buf) {
                // Full checksums, no segmentation.
                header.fill(0);
                return Ok(Some(n));
            }
            let got = self.inner.recv_with_header(header, buf)?;
            if let Some(n) = got {
                if let Some(frame) = buf.get(..n) {
                    lock(&self.relay).learn(frame);
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

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::UnixDatagram;

    use super::*;
    use crate::config::Protocol;
    use crate::forward_frames::tcp_tuple;

    /// The backend end of a datagram socketpair; the test holds the other end.
    struct Datagrams(UnixDatagram);

    impl Backend for Datagrams {
        fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
            match self.0.recv(buf) {
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e),
            }
        }
        fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
            self.0.send(frame).map(|_| true)
        }
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
    }

    fn readable(fd: RawFd) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a short timeout.
        unsafe { libc::poll(&mut pfd, 1, 1000) == 1 }
    }

    const PASST_MAC: [u8; 6] = [0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55];
    const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn arp_reply_to_gateway() -> Vec<u8> {
        let mut f = PASST_MAC.to_vec();
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 2]);
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&[10, 0, 2, 15]);
        f.extend_from_slice(&PASST_MAC);
        f.extend_from_slice(&[10, 0, 2, 2]);
        f
    }

    #[test]
    fn a_forward_added_at_run_time_reaches_the_guest_through_the_wrapper() {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let gateway = Ipv4Addr::new(10, 0, 2, 2);
        let (mut nic, control) = ForwardNic::new(
            Box::new(Datagrams(ours)),
            Ipv4Addr::new(10, 0, 2, 15),
            gateway,
        )
        .unwrap();
        let mut buf = vec![0u8; 65536];
        assert_eq!(nic.recv(&mut buf).unwrap(), None);

        // passt's frame passes through and teaches the relay the gateway's MAC.
        let mut from_passt = GUEST_MAC.to_vec();
        from_passt.extend_from_slice(&PASST_MAC);
        from_passt.extend_from_slice(&[8, 0, 0x45, 0]);
        theirs.send(&from_passt).unwrap();
        assert!(readable(nic.as_raw_fd()));
        let n = nic.recv(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..n], &from_passt[..]);

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let forward = Forward {
            protocol: Protocol::Tcp,
            host_addr: None,
            host_port: port,
            guest_addr: None,
            guest_port: 8000,
        };
        control.add(forward, OwnedFd::from(listener)).unwrap();
        assert_eq!(control.list()[0].forward, forward);
        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(readable(nic.as_raw_fd()), "the connection wakes the device");
        let n = nic.recv(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[12..14], &[8, 6], "the relay asks for the guest's MAC");
        assert_eq!(&buf[6..12], &PASST_MAC, "from the gateway's MAC");
        assert!(n >= 42);

        // The guest's ARP reply goes to the relay and to passt.
        assert!(nic.send(&arp_reply_to_gateway()).unwrap());
        assert_eq!(theirs.recv(&mut [0u8; 128]).unwrap(), 42);
        assert!(readable(nic.as_raw_fd()));
        let n = nic.recv(&mut buf).unwrap().unwrap();
        let syn = tcp_tuple(&buf[..n]).unwrap();
        assert_eq!((syn.src, syn.dst_port), (gateway, 8000));
        assert_eq!(&buf[..6], &GUEST_MAC);

        assert_eq!(control.remove(port).unwrap(), forward);
        assert!(control.list().is_empty());
    }
}
