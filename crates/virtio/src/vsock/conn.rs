//! One vsock stream between a guest port and a host Unix stream: its state, the credit
//! both ways (virtio 1.2 §5.10.6.3), and the guest's bytes the host has not taken yet.
//!
//! Credit: each side advertises `buf_alloc` (its receive buffer) and `fwd_cnt` (bytes it
//! has consumed). Towards the guest, the device sends at most
//! `peer_buf_alloc - (tx_cnt - peer_fwd_cnt)` bytes. From the guest, it takes up to
//! [`CONN_BUF`] bytes the host socket has not accepted; a guest sending beyond the credit
//! it was given gets its connection reset.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use super::packet::{op, Header, SHUTDOWN_RCV, SHUTDOWN_SEND};

/// Receive buffer the device advertises per connection.
pub const CONN_BUF: u32 = 256 << 10;
/// The device tells the guest about freed credit once this much has been consumed since
/// the last packet it sent on the connection.
pub const CREDIT_UPDATE_THRESHOLD: u32 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("the guest sent {sent} bytes with {free} bytes of credit left")]
    CreditOverflow { sent: usize, free: u32 },
    #[error("the host socket failed: {0}")]
    Host(#[source] std::io::Error),
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST queued or sent, waiting for the guest's RESPONSE.
    Connecting,
    Established,
}

/// Control packets a connection owes the guest (bit set).
pub mod pending {
    pub const REQUEST: u8 = 1;
    pub const RESPONSE: u8 = 2;
    pub const CREDIT_UPDATE: u8 = 4;
}

/// What reading the host side gave.
pub enum HostRead {
    Data(usize),
    /// Nothing to send now (no data, no credit, or not allowed in this state).
    Nothing,
    /// The host closed its sending side.
    Eof,
    Failed(std::io::Error),
}

pub struct Conn {
    pub stream: UnixStream,
    pub state: State,
    /// Control packets owed ([`pending`] bits).
    pub pending: u8,
    /// The host stream may have bytes (or EOF) to read: set by readiness, cleared by EAGAIN.
    pub readable: bool,
    /// SHUTDOWN flags the guest sent.
    pub guest_shutdown: u32,
    /// The host closed its sending side (SHUTDOWN sent or owed).
    pub host_eof: bool,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes sent to the guest.
    tx_cnt: u32,
    /// Bytes written to the host socket, and the value last told to the guest.
    fwd_cnt: u32,
    told_fwd_cnt: u32,
    /// Guest bytes the host socket has not taken.
    backlog: VecDeque<u8>,
}

impl Conn {
    pub fn new(stream: UnixStream, state: State, pending: u8) -> Self {
        Self {
            stream,
            state,
            pending,
            readable: false,
            guest_shutdown: 0,
            host_eof: false,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            fwd_cnt: 0,
            told_fwd_cnt: 0,
            backlog: VecDeque::new(),
        }
    }

    /// Take the guest's credit fields from any packet on this connection.
    pub fn peer_credit_from(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = hdr.fwd_cnt;
    }

    /// Bytes the guest can take now. A guest claiming to have consumed more than it was
    /// sent has, by wrapping arithmetic, a huge amount in flight: no credit.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Fill in the credit fields of a packet about to go to the guest.
    pub fn stamp(&mut self, hdr: &mut Header) {
        hdr.buf_alloc = CONN_BUF;
        hdr.fwd_cnt = self.fwd_cnt;
        self.told_fwd_cnt = self.fwd_cnt;
        if hdr.op == op::RW {
            self.tx_cnt = self.tx_cnt.wrapping_add(hdr.len);
        }
    }

    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Credit the guest still has towards the host.
    fn own_free(&self) -> u32 {
        CONN_BUF.saturating_sub(self.backlog.len() as u32)
    }

    /// Guest data for the host: written now as far as the socket takes it, the rest kept.
    pub fn write_from_guest(&mut self, data: &[u8]) -> Result<(), ConnError> {
        let free = self.own_free();
        if data.len() > free as usize {
            return Err(ConnError::CreditOverflow {
                sent: data.len(),
                free,
            });
        }
        let mut written = 0;
        if self.backlog.is_empty() {
            written = write_some(&mut self.stream, data)?;
            self.consumed(written);
        }
        self.backlog.extend(&data[written..]);
        Ok(())
    }

    /// The host socket is writable: push out the backlog; then carry out a shutdown the
    /// guest asked for once its data is through.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        while !self.backlog.is_empty() {
            let (front, _) = self.backlog.as_slices();
            let n = write_some(&mut self.stream, front)?;
            if n == 0 {
                break;
            }
            self.backlog.drain(..n);
            self.consumed(n);
        }
        if self.backlog.is_empty() && self.guest_shutdown & SHUTDOWN_SEND != 0 {
            // The peer may already be gone; the connection ends anyway.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    fn consumed(&mut self, n: usize) {
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
        if self.fwd_cnt.wrapping_sub(self.told_fwd_cnt) >= CREDIT_UPDATE_THRESHOLD {
            self.pending |= pending::CREDIT_UPDATE;
        }
    }

    /// Read up to `buf.len()` bytes for the guest, within its credit.
    pub fn read_for_guest(&mut self, buf: &mut [u8]) -> HostRead {
        if self.state != State::Established
            || !self.readable
            || self.host_eof
            || self.guest_shutdown & SHUTDOWN_RCV != 0
        {
            return HostRead::Nothing;
        }
        let n = buf.len().min(self.peer_credit() as usize);
        if n == 0 {
            return HostRead::Nothing;
        }
        loop {
            match self.stream.read(&mut buf[..n]) {
                Ok(0) => return HostRead::Eof,
                Ok(got) => return HostRead::Data(got),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    return HostRead::Nothing;
                }
                Err(e) => return HostRead::Failed(e),
            }
        }
    }

    /// Whether reading could give the guest something now.
    pub fn can_send_data(&self) -> bool {
        self.state == State::Established
            && self.readable
            && !self.host_eof
            && self.guest_shutdown & SHUTDOWN_RCV == 0
            && self.peer_credit() > 0
    }

    /// Both directions are finished and the guest's data is through: the device resets
    /// the connection (the final RST of a clean close).
    pub fn finished(&self) -> bool {
        let guest_done = self.guest_shutdown & SHUTDOWN_SEND != 0;
        let host_done = self.host_eof || self.guest_shutdown & SHUTDOWN_RCV != 0;
        guest_done && host_done && self.backlog.is_empty() && self.pending == 0
    }
}

/// Write what the socket takes now (0 when it is full).
fn write_some(stream: &mut UnixStream, data: &[u8]) -> Result<usize, ConnError> {
    if data.is_empty() {
        return Ok(0);
    }
    loop {
        match stream.write(data) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(ConnError::Host(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (Conn::new(a, State::Established, 0), b)
    }

    #[test]
    fn peer_credit_follows_the_guest_counters() {
        let (mut c, _b) = pair();
        assert_eq!(c.peer_credit(), 0, "nothing before the guest advertises");
        c.peer_credit_from(&Header {
            buf_alloc: 1000,
            ..Header::default()
        });
        let mut h = Header {
            op: op::RW,
            len: 600,
            ..Header::default()
        };
        c.stamp(&mut h);
        assert_eq!(c.peer_credit(), 400);
        c.peer_credit_from(&Header {
            buf_alloc: 1000,
            fwd_cnt: 600,
            ..Header::default()
        });
        assert_eq!(c.peer_credit(), 1000);
        // A lying guest (consumed more than sent) gets nothing rather than a wrap.
        c.peer_credit_from(&Header {
            buf_alloc: 1000,
            fwd_cnt: 601,
            ..Header::default()
        });
        assert_eq!(c.peer_credit(), 0);
    }

    #[test]
    fn credit_overflow_is_refused_and_backlog_bounded() {
        let (mut c, b) = pair();
        let chunk = vec![7u8; 64 << 10];
        // Fill the host socket and then the device's buffer.
        let mut sent = 0usize;
        while c.write_from_guest(&chunk).is_ok() {
            sent += chunk.len();
            assert!(sent < 64 << 20, "the backlog never filled");
        }
        assert!(c.backlog_len() <= CONN_BUF as usize);
        assert!(matches!(
            c.write_from_guest(&chunk),
            Err(ConnError::CreditOverflow { .. })
        ));
        // The host reads; the flush moves fwd_cnt and owes the guest a credit update.
        let mut sink = vec![0u8; 1 << 20];
        let _ = (&b).read(&mut sink);
        c.pending = 0;
        c.flush().unwrap();
        assert_ne!(c.pending & pending::CREDIT_UPDATE, 0);
    }

    #[test]
    fn read_respects_credit_and_reports_eof() {
        let (mut c, mut b) = pair();
        b.write_all(b"hello").unwrap();
        c.readable = true;
        let mut buf = [0u8; 16];
        assert!(matches!(c.read_for_guest(&mut buf), HostRead::Nothing));
        c.peer_credit_from(&Header {
            buf_alloc: 3,
            ..Header::default()
        });
        assert!(matches!(c.read_for_guest(&mut buf), HostRead::Data(3)));
        drop(b);
        c.peer_credit_from(&Header {
            buf_alloc: 100,
            ..Header::default()
        });
        assert!(matches!(c.read_for_guest(&mut buf), HostRead::Data(2)));
        assert!(matches!(c.read_for_guest(&mut buf), HostRead::Eof));
    }
}
