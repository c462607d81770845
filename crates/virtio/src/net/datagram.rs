//! A [`NetBackend`] over a SOCK_DGRAM unix socket: one datagram is one Ethernet frame (the
//! framing of QEMU's `-netdev dgram` and of a socketpair a test or a helper holds).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

use super::NetBackend;

/// Frames over a connected, non-blocking datagram socket.
pub struct DatagramBackend(UnixDatagram);

impl DatagramBackend {
    /// Makes `socket` non-blocking and sends and receives frames on it.
    pub fn new(socket: UnixDatagram) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self(socket))
    }

    /// A backend and the other end of its wire (also non-blocking).
    pub fn pair() -> io::Result<(Self, UnixDatagram)> {
        let (ours, theirs) = UnixDatagram::pair()?;
        theirs.set_nonblocking(true)?;
        Ok((Self::new(ours)?, theirs))
    }
}

impl NetBackend for DatagramBackend {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.0.recv(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        match self.0.send(frame) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_crosses_each_way_and_an_empty_socket_is_none() {
        let (mut backend, theirs) = DatagramBackend::pair().unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(backend.recv(&mut buf).unwrap(), None);
        theirs.send(b"frame-in").unwrap();
        assert_eq!(backend.recv(&mut buf).unwrap(), Some(8));
        assert!(backend.send(b"frame-out").unwrap());
        assert_eq!(theirs.recv(&mut buf).unwrap(), 9);
        assert_eq!(&buf[..9], b"frame-out");
    }
}
