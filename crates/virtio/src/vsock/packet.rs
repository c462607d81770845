//! The 44-byte `virtio_vsock_hdr` (virtio 1.2 §5.10.6) and the checks every header the
//! guest transmits goes through before any field is used.

use vm_memory::GuestMemoryMmap;

use crate::chain_io::{split, ChainReader};
use crate::queue::Segment;

/// Size of `struct virtio_vsock_hdr` (little-endian, packed).
pub const HDR_LEN: usize = 44;
/// Largest payload of one packet, either way (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PAYLOAD: u32 = 64 << 10;
/// The host's context ID: the only destination the device serves.
pub const HOST_CID: u64 = 2;
/// `type`: connection-oriented stream, the only type the device offers.
pub const TYPE_STREAM: u16 = 1;

/// Operations (`op`).
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flags: the sender will receive no more / send no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;

/// Why a transmitted packet is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("the chain has device-writable buffers")]
    WritableBuffers,
    #[error("the chain holds {0} bytes, less than a header")]
    ShortHeader(u64),
    #[error("guest memory holding the packet cannot be read")]
    Unreadable,
    #[error("payload length {0} exceeds the {MAX_PAYLOAD}-byte maximum")]
    PayloadTooLong(u32),
    #[error("payload length {len} but the chain holds {available} bytes after the header")]
    PayloadShort { len: u32, available: u64 },
    #[error("source CID {0} is not the guest's")]
    WrongSrcCid(u64),
    #[error("destination CID {0} is not the host's")]
    WrongDstCid(u64),
    #[error("socket type {0} is not STREAM")]
    WrongType(u16),
    #[error("unknown operation {0}")]
    UnknownOp(u16),
    #[error("operation {op} carries a {len}-byte payload")]
    PayloadOnControl { op: u16, len: u32 },
}

impl PacketError {
    /// Whether the sender gets an RST for it: only for a header that was read in full and
    /// names the guest as its source (anything else could not be addressed back).
    pub fn deserves_rst(&self, hdr: &Header) -> bool {
        hdr.op != op::RST
            && !matches!(
                self,
                Self::WritableBuffers
                    | Self::ShortHeader(_)
                    | Self::Unreadable
                    | Self::WrongSrcCid(_)
            )
    }
}

/// A packet header, fields in host order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

fn u64_at(b: &[u8; HDR_LEN], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}
fn u32_at(b: &[u8; HDR_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u16_at(b: &[u8; HDR_LEN], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl Header {
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Self {
        Self {
            src_cid: u64_at(b, 0),
            dst_cid: u64_at(b, 8),
            src_port: u32_at(b, 16),
            dst_port: u32_at(b, 20),
            len: u32_at(b, 24),
            kind: u16_at(b, 28),
            op: u16_at(b, 30),
            flags: u32_at(b, 32),
            buf_alloc: u32_at(b, 36),
            fwd_cnt: u32_at(b, 40),
        }
    }

    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The RST answering this packet (ports and CIDs swapped).
    pub fn rst_reply(&self) -> Self {
        Self {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            kind: TYPE_STREAM,
            op: op::RST,
            ..Self::default()
        }
    }

    /// Check a header the guest transmitted; `available` is the chain's byte count after
    /// the header. Every field the device relies on is checked, the full 64-bit CIDs
    /// included (their reserved upper halves must be zero).
    pub fn check(&self, guest_cid: u64, available: u64) -> Result<(), PacketError> {
        if self.src_cid != guest_cid {
            return Err(PacketError::WrongSrcCid(self.src_cid));
        }
        if self.dst_cid != HOST_CID {
            return Err(PacketError::WrongDstCid(self.dst_cid));
        }
        if self.kind != TYPE_STREAM {
            return Err(PacketError::WrongType(self.kind));
        }
        if !(op::REQUEST..=op::CREDIT_REQUEST).contains(&self.op) {
            return Err(PacketError::UnknownOp(self.op));
        }
        if self.len > MAX_PAYLOAD {
            return Err(PacketError::PayloadTooLong(self.len));
        }
        if u64::from(self.len) > available {
            return Err(PacketError::PayloadShort {
                len: self.len,
                available,
            });
        }
        if self.op != op::RW && self.len != 0 {
            return Err(PacketError::PayloadOnControl {
                op: self.op,
                len: self.len,
            });
        }
        Ok(())
    }
}

/// Read and check the packet of a transmit chain: its header, and for RW its payload
/// into `payload` (resized to `len`). On error the header read so far is returned too
/// (zeroed when it could not be read), for [`PacketError::deserves_rst`].
pub fn read_tx(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    guest_cid: u64,
    payload: &mut Vec<u8>,
) -> Result<Header, (Header, PacketError)> {
    let (readable, writable) = split(segs);
    if !writable.is_empty() {
        return Err((Header::default(), PacketError::WritableBuffers));
    }
    let mut reader = ChainReader::new(mem, readable);
    let total = reader.remaining();
    if total < HDR_LEN as u64 {
        return Err((Header::default(), PacketError::ShortHeader(total)));
    }
    let mut raw = [0u8; HDR_LEN];
    if reader.read_exact(&mut raw).is_err() {
        return Err((Header::default(), PacketError::Unreadable));
    }
    let hdr = Header::from_bytes(&raw);
    hdr.check(guest_cid, reader.remaining())
        .map_err(|e| (hdr, e))?;
    payload.resize(hdr.len as usize, 0);
    if reader.read_exact(payload).is_err() {
        return Err((hdr, PacketError::Unreadable));
    }
    Ok(hdr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1000,
            dst_port: 52,
            len: 0,
            kind: TYPE_STREAM,
            op: op::REQUEST,
            flags: 0,
            buf_alloc: 1 << 18,
            fwd_cnt: 0,
        }
    }

    #[test]
    fn header_round_trips_in_the_spec_layout() {
        let h = Header {
            len: 7,
            op: op::RW,
            flags: 0x0102_0304,
            fwd_cnt: 0xdead_beef,
            ..good()
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[24..28], &7u32.to_le_bytes());
        assert_eq!(&b[28..30], &1u16.to_le_bytes());
        assert_eq!(&b[30..32], &5u16.to_le_bytes());
        assert_eq!(&b[40..44], &0xdead_beefu32.to_le_bytes());
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn hostile_fields_are_refused() {
        let cases = [
            (
                Header {
                    src_cid: 4,
                    ..good()
                },
                PacketError::WrongSrcCid(4),
            ),
            (
                Header {
                    src_cid: 3 | 1 << 32,
                    ..good()
                },
                PacketError::WrongSrcCid(3 | 1 << 32),
            ),
            (
                Header {
                    dst_cid: 1,
                    ..good()
                },
                PacketError::WrongDstCid(1),
            ),
            (Header { kind: 2, ..good() }, PacketError::WrongType(2)),
            (Header { op: 0, ..good() }, PacketError::UnknownOp(0)),
            (Header { op: 8, ..good() }, PacketError::UnknownOp(8)),
            (
                Header {
                    op: op::RW,
                    len: MAX_PAYLOAD + 1,
                    ..good()
                },
                PacketError::PayloadTooLong(MAX_PAYLOAD + 1),
            ),
            (
                Header {
                    op: op::RW,
                    len: 100,
                    ..good()
                },
                PacketError::PayloadShort {
                    len: 100,
                    available: 99,
                },
            ),
            (
                Header { len: 1, ..good() },
                PacketError::PayloadOnControl {
                    op: op::REQUEST,
                    len: 1,
                },
            ),
        ];
        for (h, want) in cases {
            assert_eq!(h.check(3, 99), Err(want), "{h:?}");
        }
        assert_eq!(good().check(3, 0), Ok(()));
    }

    #[test]
    fn rst_goes_back_to_the_sender_and_never_answers_an_rst() {
        let r = good().rst_reply();
        assert_eq!((r.src_cid, r.dst_cid), (HOST_CID, 3));
        assert_eq!((r.src_port, r.dst_port), (52, 1000));
        assert_eq!(r.op, op::RST);
        assert!(PacketError::UnknownOp(9).deserves_rst(&good()));
        assert!(!PacketError::WrongType(2).deserves_rst(&r));
        assert!(!PacketError::WrongSrcCid(4).deserves_rst(&good()));
    }
}
