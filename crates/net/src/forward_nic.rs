//! A `nat` NIC's backend with the run-time forward relay ([`crate::forward_relay`]) on its
//! wire: guest frames of the relay's connections go to it (ARP replies to the gateway to
//! both), the relay's frames reach the guest ahead of passt's, and passt's frames teach it
//! the gateway's MAC. [`ForwardControl`] adds and removes forwards from another thread
//! (the API's).
//!
//! The wrapping is [`DivertingNic`]'s; the relay adds its host sockets and a timer for
//! smoltcp's retransmissions and idle limits to the fds it polls, and [`ForwardControl`]
//! raises its eventfd when forwards change.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

use crate::config::Forward;
use crate::diverting_nic::{DivertingNic, Steer, WireStack};
use crate::forward_relay::{LiveForward, Relay, RelayError};
use crate::Backend;

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

pub type ForwardNic = DivertingNic<RelayStack>;

/// The relay as the stack on a NIC's wire, with the timer of its retransmissions and idle
/// limits.
pub struct RelayStack {
    relay: Arc<Mutex<Relay>>,
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

/// `inner` (passt, whose guest is at `guest_ip` behind `gateway`) with the relay on its
/// wire, and the control of its forwards.
pub fn with_forwards(
    inner: Box<dyn Backend>,
    guest_ip: Ipv4Addr,
    gateway: Ipv4Addr,
) -> Result<(ForwardNic, ForwardControl), ForwardNicError> {
    let relay = Relay::new(guest_ip, gateway).map_err(ForwardNicError::Fds)?;
    let stack = RelayStack {
        relay: Arc::new(Mutex::new(relay)),
        timer: timerfd().map_err(ForwardNicError::Fds)?,
        timer_armed: false,
    };
    let relay = stack.relay.clone();
    let nic = DivertingNic::new(inner, stack).map_err(ForwardNicError::Fds)?;
    let control = ForwardControl {
        relay,
        wake: nic.waker(),
    };
    Ok((nic, control))
}

impl WireStack for RelayStack {
    fn steer(&mut self, frame: &[u8]) -> Steer {
        lock(&self.relay).steer(frame)
    }

    fn receive(&mut self, frame: &[u8]) -> bool {
        let mut relay = lock(&self.relay);
        relay.receive_frame(frame);
        relay.has_output()
    }

    /// Runs the relay and rearms its timer.
    fn next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
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

    /// passt's frames teach the relay the gateway's MAC.
    fn learn(&mut self, frame: &[u8]) {
        lock(&self.relay).learn(frame);
    }

    fn fds(&self) -> Vec<RawFd> {
        vec![self.timer.as_raw_fd(), lock(&self.relay).host_fd()]
    }

    fn clear(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into a live buffer from our non-blocking timerfd.
        unsafe { libc::read(self.timer.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;
    use crate::config::Protocol;
    use crate::diverting_nic::test_backend;
    use crate::forward_frames::tcp_tuple;

    fn readable(fd: RawFd) -> bool {
        test_backend::readable(fd, 1000)
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
        let (backend, theirs) = test_backend::pair();
        let gateway = Ipv4Addr::new(10, 0, 2, 2);
        let (mut nic, control) =
            with_forwards(backend, Ipv4Addr::new(10, 0, 2, 15), gateway).unwrap();
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
