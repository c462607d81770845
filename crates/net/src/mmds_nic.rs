//! A NIC backend with the MMDS on its wire: frames the guest sends to the MMDS address
//! (ARP for it, TCP to its port 80) go to an [`mmds::Endpoint`] instead of the backend,
//! and the endpoint's frames reach the guest ahead of the backend's.
//!
//! The I/O thread polls one fd per backend, so this one is an epoll set holding the
//! backend's fd and an eventfd raised when the endpoint has frames: either readiness makes
//! the set readable, and the device then runs its queues (receive takes the endpoint's
//! frames first).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::Backend;
use virtio::net::{GuestOffloads, NET_HDR_LEN};

#[derive(Debug, thiserror::Error)]
pub enum MmdsNicError {
    #[error("cannot set up the MMDS wake-up fds: {0}")]
    Fds(#[source] io::Error),
    #[error(transparent)]
    Endpoint(#[from] mmds::EndpointError),
}

pub struct MmdsNic {
    inner: Box<dyn Backend>,
    endpoint: mmds::Endpoint,
    ready: Epoll,
    wake: EventFd,
}

impl MmdsNic {
    /// `inner` with the MMDS `service` answering at `ip` on its wire.
    pub fn new(
        inner: Box<dyn Backend>,
        service: mmds::SharedMmds,
        ip: Ipv4Addr,
    ) -> Result<Self, MmdsNicError> {
        let ready = Epoll::new().map_err(MmdsNicError::Fds)?;
        let wake = EventFd::new(libc::EFD_NONBLOCK).map_err(MmdsNicError::Fds)?;
        // Edge-triggered like the I/O thread's own registration: every new readiness of
        // the backend (either way) wakes the set once.
        let inner_events = EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED;
        ready
            .ctl(
                ControlOperation::Add,
                inner.as_raw_fd(),
                EpollEvent::new(inner_events, 0),
            )
            .map_err(MmdsNicError::Fds)?;
        ready
            .ctl(
                ControlOperation::Add,
                wake.as_raw_fd(),
                EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, 1),
            )
            .map_err(MmdsNicError::Fds)?;
        Ok(Self {
            inner,
            endpoint: mmds::Endpoint::new(service, ip)?,
            ready,
            wake,
        })
    }

    /// Empties the set's ready list, so that only new readiness wakes the I/O thread.
    fn clear_readiness(&self) {
        let mut events = [EpollEvent::default(); 4];
        while matches!(self.ready.wait(0, &mut events), Ok(n) if n > 0) {}
        let _ = self.wake.read();
    }

    /// Takes `frame` for the MMDS when it is addressed there.
    fn divert(&mut self, frame: &[u8]) -> bool {
        if !mmds::is_for_mmds(frame, self.endpoint.ip()) {
            return false;
        }
        self.endpoint.receive_frame(frame);
        if self.endpoint.has_output() {
            let _ = self.wake.write(1);
        }
        true
    }
}

impl Backend for MmdsNic {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let mut header = [0u8; NET_HDR_LEN];
        self.recv_with_header(&mut header, buf)
    }

    /// The endpoint's frames first, then the backend's. The set's readiness is cleared
    /// only when both are empty, and both are asked again after that, so a frame that came
    /// meanwhile is taken now or wakes the I/O thread again.
    fn recv_with_header(
        &mut self,
        header: &mut [u8; NET_HDR_LEN],
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        for attempt in 0..2 {
            if let Some(n) = self.endpoint.next_frame(buf) {
                // Full checksums, no segmentation.
                header.fill(0);
                return Ok(Some(n));
            }
            let got = self.inner.recv_with_header(header, buf)?;
            if got.is_some() {
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
    use std::os::unix::net::UnixDatagram;
    use std::sync::{Arc, Mutex};

    use super::*;

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
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }

    fn arp_request_for(ip: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[
            0x52, 0x54, 0, 1, 2, 3, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1,
        ]);
        f.extend_from_slice(&[0x52, 0x54, 0, 1, 2, 3, 10, 0, 2, 15]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&ip);
        f
    }

    #[test]
    fn mmds_frames_are_answered_others_pass_through() {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let service = Arc::new(Mutex::new(mmds::Mmds::new(1024).unwrap()));
        let mut nic = MmdsNic::new(Box::new(Datagrams(ours)), service, mmds::DEFAULT_IPV4).unwrap();
        let mut buf = vec![0; 2048];
        // Drain the initial writable edge.
        assert_eq!(nic.recv(&mut buf).unwrap(), None);
        assert!(!readable(nic.as_raw_fd()));

        assert!(nic.send(&arp_request_for([169, 254, 169, 254])).unwrap());
        assert!(
            readable(nic.as_raw_fd()),
            "the endpoint's reply wakes the device"
        );
        let n = nic.recv(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[20..22], &[0, 2]);
        assert_eq!(&buf[22..28], &mmds::MMDS_MAC);
        assert!(
            theirs.recv(&mut [0; 64]).is_err(),
            "nothing reached the backend"
        );
        assert_eq!(nic.recv(&mut buf).unwrap(), None);
        assert!(!readable(nic.as_raw_fd()));
        assert!(n >= 42);

        let other = arp_request_for([10, 0, 2, 2]);
        assert!(nic.send(&other).unwrap());
        let mut got = [0u8; 64];
        assert_eq!(theirs.recv(&mut got).unwrap(), other.len());
        theirs.send(b"from the backend frame").unwrap();
        assert!(readable(nic.as_raw_fd()));
        let n = nic.recv(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..n], b"from the backend frame");
    }
}
