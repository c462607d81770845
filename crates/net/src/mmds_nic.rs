//! A NIC backend with the MMDS on its wire: frames the guest sends to the MMDS address
//! (ARP for it, TCP to its port 80) go to an [`mmds::Endpoint`] instead of the backend,
//! and the endpoint's frames reach the guest ahead of the backend's (the wrapping is
//! [`DivertingNic`]'s).

use std::io;
use std::net::Ipv4Addr;

use crate::diverting_nic::{DivertingNic, Steer, WireStack};
use crate::Backend;

#[derive(Debug, thiserror::Error)]
pub enum MmdsNicError {
    #[error("cannot set up the MMDS wake-up fds: {0}")]
    Fds(#[source] io::Error),
    #[error(transparent)]
    Endpoint(#[from] mmds::EndpointError),
}

pub type MmdsNic = DivertingNic<mmds::Endpoint>;

/// `inner` with the MMDS `service` answering at `ip` on its wire.
pub fn with_mmds(
    inner: Box<dyn Backend>,
    service: mmds::SharedMmds,
    ip: Ipv4Addr,
) -> Result<MmdsNic, MmdsNicError> {
    let endpoint = mmds::Endpoint::new(service, ip)?;
    DivertingNic::new(inner, endpoint).map_err(MmdsNicError::Fds)
}

impl WireStack for mmds::Endpoint {
    fn steer(&mut self, frame: &[u8]) -> Steer {
        if mmds::is_for_mmds(frame, self.ip()) {
            Steer::Stack
        } else {
            Steer::Backend
        }
    }

    fn receive(&mut self, frame: &[u8]) -> bool {
        self.receive_frame(frame);
        self.has_output()
    }

    fn next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        mmds::Endpoint::next_frame(self, buf)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::diverting_nic::test_backend;

    fn readable(fd: std::os::fd::RawFd) -> bool {
        test_backend::readable(fd, 0)
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
        let (backend, theirs) = test_backend::pair();
        let service = Arc::new(Mutex::new(mmds::Mmds::new(1024).unwrap()));
        let mut nic = with_mmds(backend, service, mmds::DEFAULT_IPV4).unwrap();
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
