//! Frames over a stream socket in QEMU's `-netdev stream` format (each frame preceded by
//! its length as a 4-byte big-endian number), as passt speaks it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use virtio::net::MAX_FRAME_LEN;

use crate::Backend;

/// Bytes read from the socket per read call at most.
const READ_CHUNK: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the peer sent a frame length of {0} bytes")]
    BadLength(u32),
    #[error("the peer closed the connection")]
    Closed,
}

/// A backend over a connected stream socket.
pub struct StreamBackend {
    fd: OwnedFd,
    /// Received bytes not yet handed out: `rx[rx_start..rx_end]`.
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    /// The unsent tail of the last frame the socket took only partly.
    tx: Vec<u8>,
    tx_start: usize,
}

fn last_error_or_none<T>() -> io::Result<Option<T>> {
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
        _ => Err(err),
    }
}

impl StreamBackend {
    /// Use `fd`, a connected stream socket (made non-blocking here).
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        crate::tap::set_nonblocking(fd.as_raw_fd())?;
        Ok(Self {
            fd,
            rx: vec![0; READ_CHUNK + 4 + MAX_FRAME_LEN],
            rx_start: 0,
            rx_end: 0,
            tx: Vec::with_capacity(4 + MAX_FRAME_LEN),
            tx_start: 0,
        })
    }

    /// A whole frame at the front of the receive buffer: (start, len).
    fn buffered_frame(&self) -> Result<Option<(usize, usize)>, StreamError> {
        let avail = &self.rx[self.rx_start..self.rx_end];
        let Some(len) = avail.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        if len as usize > MAX_FRAME_LEN {
            return Err(StreamError::BadLength(len));
        }
        let len = len as usize;
        Ok((avail.len() >= 4 + len).then_some((self.rx_start + 4, len)))
    }

    /// Read more bytes; false when nothing was there.
    fn fill(&mut self) -> io::Result<bool> {
        if self.rx_start > 0 {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        let room = &mut self.rx[self.rx_end..];
        // SAFETY: `room` is a live, writable buffer of `room.len()` bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), room.as_mut_ptr().cast(), room.len()) };
        if n < 0 {
            return last_error_or_none().map(|o: Option<()>| o.is_some());
        }
        if n == 0 {
            return Err(io::Error::other(StreamError::Closed));
        }
        self.rx_end += n as usize;
        Ok(true)
    }

    /// Whether part of a frame waits for the socket to take it.
    pub fn has_pending(&self) -> bool {
        self.tx_start < self.tx.len()
    }

    /// Write as much of the pending tail as the socket takes; true when none is left.
    fn flush_tail(&mut self) -> io::Result<bool> {
        while self.tx_start < self.tx.len() {
            let rest = &self.tx[self.tx_start..];
            // SAFETY: `rest` is a live buffer of `rest.len()` bytes the kernel only reads.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                return last_error_or_none::<()>().map(|_| false);
            }
            self.tx_start += n as usize;
        }
        self.tx.clear();
        self.tx_start = 0;
        Ok(true)
    }
}

impl Backend for StreamBackend {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            if let Some((start, len)) = self.buffered_frame().map_err(io::Error::other)? {
                self.rx_start = start + len;
                if len > buf.len() {
                    continue;
                }
                buf[..len].copy_from_slice(&self.rx[start..start + len]);
                return Ok(Some(len));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        if !self.flush_tail()? {
            return Ok(false);
        }
        let len = (frame.len() as u32).to_be_bytes();
        let iov = [
            libc::iovec {
                iov_base: len.as_ptr().cast_mut().cast(),
                iov_len: 4,
            },
            libc::iovec {
                iov_base: frame.as_ptr().cast_mut().cast(),
                iov_len: frame.len(),
            },
        ];
        // SAFETY: a msghdr naming two live iovecs the kernel only reads; no address or
        // control data.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_ptr().cast_mut();
            msg.msg_iovlen = 2;
            libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
        };
        if n < 0 {
            return last_error_or_none::<()>().map(|_| false);
        }
        let sent = n as usize;
        if sent < 4 + frame.len() {
            // Keep the tail so the stream stays framed; it goes out first next time.
            self.tx.extend_from_slice(&len);
            self.tx.extend_from_slice(frame);
            self.tx_start = sent;
        }
        Ok(true)
    }

    fn flush(&mut self) -> io::Result<bool> {
        self.flush_tail()
    }

    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn frames_both_ways_and_partial_reads() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut backend = StreamBackend::new(a.into()).unwrap();
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        assert_eq!(backend.recv(&mut buf).unwrap(), None);
        // A frame arriving in pieces.
        b.write_all(&[0, 0, 0, 5, b'h', b'e']).unwrap();
        assert_eq!(backend.recv(&mut buf).unwrap(), None);
        b.write_all(&[b'l', b'l', b'o', 0, 0, 0, 1, b'!']).unwrap();
        assert_eq!(backend.recv(&mut buf).unwrap(), Some(5));
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(backend.recv(&mut buf).unwrap(), Some(1));
        assert_eq!(buf[0], b'!');
        assert!(backend.send(b"abc").unwrap());
        let mut got = [0u8; 7];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, &[0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn oversized_length_is_an_error_and_eof_is_reported() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut backend = StreamBackend::new(a.into()).unwrap();
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        b.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
        assert!(backend.recv(&mut buf).is_err());
        let (a, b) = UnixStream::pair().unwrap();
        let mut backend = StreamBackend::new(a.into()).unwrap();
        drop(b);
        assert!(backend.recv(&mut buf).is_err());
        assert!(
            backend.send(b"0123456789abcdef").is_err(),
            "EPIPE, no SIGPIPE"
        );
    }

    #[test]
    fn a_full_socket_keeps_frames_whole() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut backend = StreamBackend::new(a.into()).unwrap();
        let frame = vec![7u8; 1500];
        let mut accepted = 0usize;
        while backend.send(&frame).unwrap() {
            accepted += 1;
            assert!(accepted < 100_000, "the socket buffer is bounded");
        }
        // Drain and check every frame arrives whole, including the partly sent one.
        b.set_nonblocking(true).unwrap();
        let mut seen = 0usize;
        let mut pending = Vec::new();
        let mut chunk = vec![0u8; 65536];
        loop {
            while let Ok(n) = b.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&chunk[..n]);
            }
            while pending.len() >= 4 + 1500 {
                assert_eq!(&pending[..4], &1500u32.to_be_bytes());
                assert!(pending[4..1504].iter().all(|&x| x == 7));
                pending.drain(..1504);
                seen += 1;
            }
            if backend.flush().unwrap() && seen == accepted {
                break;
            }
        }
        assert!(pending.is_empty());
    }
}
