//! The migration wire format: a preamble (magic and version), then frames of a 4-byte kind
//! and a 4-byte payload length (both little-endian) and the payload. Every length is
//! checked against the kind's limit before anything is read or allocated: the receiver
//! treats the stream as hostile input.

use std::io::{Read, Write};

/// The first 8 bytes of every migration stream.
pub const MAGIC: [u8; 8] = *b"VESSELMG";
/// 1: stop-and-copy and pre-copy; machine, memory, state, done; ready, go, resumed.
pub const VERSION: u32 = 1;
/// The most guest memory one `Memory` frame carries.
pub const MAX_MEMORY_CHUNK: u32 = 4 << 20;
/// A machine description is a few KiB (disks and NICs); nothing sane is larger.
pub const MAX_MACHINE_BYTES: u32 = 1 << 20;
/// The state is the snapshot state file's JSON, capped as that file is.
pub const MAX_STATE_BYTES: u32 = 64 << 20;
/// An error text from the other end.
pub const MAX_ERROR_BYTES: u32 = 4096;
/// The most disks a `Disks` frame lists (as a snapshot's machine).
pub const MAX_DISKS: u32 = 64;
/// A `DiskData` frame's prefix: the disk's index (u32) and the offset (u64).
pub const DISK_PREFIX: u32 = 12;
/// A `DiskZero` frame: the disk's index (u32), the offset and the length (u64 each).
pub const DISK_ZERO_LEN: u32 = 20;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the migration stream ended early or failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a vessel migration stream (bad magic)")]
    Magic,
    #[error(
        "migration stream version {found} is not supported (this vessel speaks version {VERSION})"
    )]
    Version { found: u32 },
    #[error("unknown migration frame kind {0}")]
    UnknownKind(u32),
    #[error("a {kind} frame of {len} bytes (at most {max})")]
    TooLong {
        kind: &'static str,
        len: u32,
        max: u32,
    },
    #[error("a {kind} frame of {len} bytes (it must be {expected})")]
    BadLength {
        kind: &'static str,
        len: u32,
        expected: u32,
    },
    #[error("an unexpected {got} frame (expected {expected})")]
    Unexpected {
        got: &'static str,
        expected: &'static str,
    },
}

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sender → receiver: the machine's shape (JSON `MachineState`), first and once.
    Machine = 1,
    /// Sender → receiver: a guest-physical address (u64) and guest memory from there.
    Memory = 2,
    /// Sender → receiver: the paused VM's state (the snapshot state file's JSON).
    State = 3,
    /// Sender → receiver: nothing more follows the state.
    Done = 4,
    /// Sender → receiver (`--copy-storage`): each disk's size (u64), right after the
    /// machine; the disks' contents follow.
    Disks = 5,
    /// Sender → receiver: a disk's index (u32), an offset (u64) and the disk's bytes there.
    DiskData = 6,
    /// Sender → receiver: a disk's index (u32), an offset and a length (u64) that read as
    /// zeroes.
    DiskZero = 7,
    /// Receiver → sender: the VM is built from the state and waits for `Go`.
    Ready = 16,
    /// Either way: the sender gives up (empty), or the receiver failed (its reason).
    Error = 17,
    /// Receiver → sender: the VM runs on the receiver.
    Resumed = 18,
    /// Sender → receiver: resume the VM (the sender will never run it again).
    Go = 19,
}

impl Kind {
    fn from_u32(value: u32) -> Result<Self, WireError> {
        Ok(match value {
            1 => Kind::Machine,
            2 => Kind::Memory,
            3 => Kind::State,
            4 => Kind::Done,
            5 => Kind::Disks,
            6 => Kind::DiskData,
            7 => Kind::DiskZero,
            16 => Kind::Ready,
            17 => Kind::Error,
            18 => Kind::Resumed,
            19 => Kind::Go,
            other => return Err(WireError::UnknownKind(other)),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Machine => "machine",
            Kind::Memory => "memory",
            Kind::State => "state",
            Kind::Done => "done",
            Kind::Disks => "disks",
            Kind::DiskData => "disk data",
            Kind::DiskZero => "disk zeroes",
            Kind::Ready => "ready",
            Kind::Error => "error",
            Kind::Resumed => "resumed",
            Kind::Go => "go",
        }
    }

    /// The most payload bytes a frame of this kind may have.
    fn max_len(self) -> u32 {
        match self {
            Kind::Machine => MAX_MACHINE_BYTES,
            Kind::Memory => MAX_MEMORY_CHUNK + 8,
            Kind::State => MAX_STATE_BYTES,
            Kind::Error => MAX_ERROR_BYTES,
            Kind::Disks => MAX_DISKS * 8,
            Kind::DiskData => MAX_MEMORY_CHUNK + DISK_PREFIX,
            Kind::DiskZero => DISK_ZERO_LEN,
            Kind::Done | Kind::Ready | Kind::Resumed | Kind::Go => 0,
        }
    }
}

/// A frame's header, checked: its kind is known and its length within the kind's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub len: u32,
}

impl Header {
    /// For a `Memory` frame: the bytes of guest memory after its address.
    pub fn memory_len(self) -> u32 {
        self.len.saturating_sub(8)
    }

    /// For a `DiskData` frame: the disk's bytes after its prefix.
    pub fn disk_data_len(self) -> u32 {
        self.len.saturating_sub(DISK_PREFIX)
    }
}

/// The shortest payload a frame of `kind` may have, and whether it must be exactly that.
fn min_len(kind: Kind) -> (u32, bool) {
    match kind {
        Kind::Memory => (8, false),
        Kind::DiskData => (DISK_PREFIX, false),
        Kind::DiskZero => (DISK_ZERO_LEN, true),
        _ => (0, false),
    }
}

/// Writes the preamble.
pub fn write_preamble(w: &mut impl Write) -> Result<(), WireError> {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&MAGIC);
    bytes[8..].copy_from_slice(&VERSION.to_le_bytes());
    w.write_all(&bytes)?;
    Ok(())
}

/// Reads and checks the preamble.
pub fn read_preamble(r: &mut impl Read) -> Result<(), WireError> {
    let mut bytes = [0u8; 12];
    r.read_exact(&mut bytes)?;
    if bytes[..8] != MAGIC {
        return Err(WireError::Magic);
    }
    let found = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if found != VERSION {
        return Err(WireError::Version { found });
    }
    Ok(())
}

fn header_bytes(kind: Kind, len: u32) -> [u8; 8] {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&(kind as u32).to_le_bytes());
    bytes[4..].copy_from_slice(&len.to_le_bytes());
    bytes
}

/// Writes a whole frame of `kind` with `payload`.
pub fn write_frame(w: &mut impl Write, kind: Kind, payload: &[u8]) -> Result<(), WireError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&len| len <= kind.max_len())
        .ok_or(WireError::TooLong {
            kind: kind.name(),
            len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            max: kind.max_len(),
        })?;
    w.write_all(&header_bytes(kind, len))?;
    w.write_all(payload)?;
    Ok(())
}

/// The length of a memory or disk chunk, at most [`MAX_MEMORY_CHUNK`].
fn chunk_len(kind: &'static str, bytes: &[u8]) -> Result<u32, WireError> {
    u32::try_from(bytes.len())
        .ok()
        .filter(|&len| len <= MAX_MEMORY_CHUNK)
        .ok_or(WireError::TooLong {
            kind,
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            max: MAX_MEMORY_CHUNK,
        })
}

/// Writes a `Memory` frame: `bytes` of guest memory at guest-physical `addr`.
pub fn write_memory(w: &mut impl Write, addr: u64, bytes: &[u8]) -> Result<(), WireError> {
    let len = chunk_len("memory", bytes)?;
    w.write_all(&header_bytes(Kind::Memory, len + 8))?;
    w.write_all(&addr.to_le_bytes())?;
    w.write_all(bytes)?;
    Ok(())
}

/// Writes a `Disks` frame: the size of each disk whose contents follow.
pub fn write_disks(w: &mut impl Write, sizes: &[u64]) -> Result<(), WireError> {
    let payload: Vec<u8> = sizes.iter().flat_map(|s| s.to_le_bytes()).collect();
    write_frame(w, Kind::Disks, &payload)
}

/// Reads a `Disks` frame's payload (its length is a checked multiple of 8).
pub fn parse_disks(payload: &[u8]) -> Vec<u64> {
    payload
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect()
}

/// Writes a `DiskData` frame: `bytes` of disk `disk` at `offset`.
pub fn write_disk_data(
    w: &mut impl Write,
    disk: u32,
    offset: u64,
    bytes: &[u8],
) -> Result<(), WireError> {
    let len = chunk_len("disk data", bytes)?;
    w.write_all(&header_bytes(Kind::DiskData, len + DISK_PREFIX))?;
    w.write_all(&disk.to_le_bytes())?;
    w.write_all(&offset.to_le_bytes())?;
    w.write_all(bytes)?;
    Ok(())
}

/// Reads the disk index and offset that start a `DiskData` frame's payload.
pub fn read_disk_prefix(r: &mut impl Read) -> Result<(u32, u64), WireError> {
    let mut bytes = [0u8; DISK_PREFIX as usize];
    r.read_exact(&mut bytes)?;
    let (disk, offset) = bytes.split_at(4);
    Ok((
        u32::from_le_bytes(disk.try_into().unwrap_or_default()),
        u64::from_le_bytes(offset.try_into().unwrap_or_default()),
    ))
}

/// Writes a `DiskZero` frame: `len` bytes of disk `disk` at `offset` read as zeroes.
pub fn write_disk_zero(
    w: &mut impl Write,
    disk: u32,
    offset: u64,
    len: u64,
) -> Result<(), WireError> {
    let mut payload = [0u8; DISK_ZERO_LEN as usize];
    payload[..4].copy_from_slice(&disk.to_le_bytes());
    payload[4..12].copy_from_slice(&offset.to_le_bytes());
    payload[12..].copy_from_slice(&len.to_le_bytes());
    write_frame(w, Kind::DiskZero, &payload)
}

/// A `DiskZero` frame's disk, offset and length (its length is checked to be 20).
pub fn parse_disk_zero(payload: &[u8]) -> (u32, u64, u64) {
    let word = |range: std::ops::Range<usize>| {
        let mut b = [0u8; 8];
        if let Some(src) = payload.get(range) {
            b[..src.len()].copy_from_slice(src);
        }
        u64::from_le_bytes(b)
    };
    (word(0..4) as u32, word(4..12), word(12..20))
}

/// Reads a frame header and checks its kind and length.
pub fn read_header(r: &mut impl Read) -> Result<Header, WireError> {
    let mut bytes = [0u8; 8];
    r.read_exact(&mut bytes)?;
    let kind = Kind::from_u32(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))?;
    let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len > kind.max_len() {
        return Err(WireError::TooLong {
            kind: kind.name(),
            len,
            max: kind.max_len(),
        });
    }
    let (min, exact) = min_len(kind);
    let bad_disks = kind == Kind::Disks && !len.is_multiple_of(8);
    if len < min || (exact && len != min) || bad_disks {
        return Err(WireError::BadLength {
            kind: kind.name(),
            len,
            expected: if bad_disks { len / 8 * 8 } else { min },
        });
    }
    Ok(Header { kind, len })
}

/// Reads the payload of a frame whose header was read (its length is already bounded).
pub fn read_payload(r: &mut impl Read, header: Header) -> Result<Vec<u8>, WireError> {
    let mut payload = vec![0u8; header.len as usize];
    r.read_exact(&mut payload)?;
    Ok(payload)
}

/// Reads the guest address that starts a `Memory` frame's payload.
pub fn read_address(r: &mut impl Read) -> Result<u64, WireError> {
    let mut bytes = [0u8; 8];
    r.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

/// Reads a frame that must be of kind `want` (an `Error` frame is returned as its text).
pub fn expect(r: &mut impl Read, want: Kind) -> Result<Result<Vec<u8>, String>, WireError> {
    let header = read_header(r)?;
    let payload = read_payload(r, header)?;
    if header.kind == Kind::Error && want != Kind::Error {
        return Ok(Err(String::from_utf8_lossy(&payload).into_owned()));
    }
    if header.kind != want {
        return Err(WireError::Unexpected {
            got: header.kind.name(),
            expected: want.name(),
        });
    }
    Ok(Ok(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(parts: &[&[u8]]) -> std::io::Cursor<Vec<u8>> {
        std::io::Cursor::new(parts.concat())
    }

    #[test]
    fn frames_round_trip() {
        let mut out = Vec::new();
        write_preamble(&mut out).unwrap();
        write_frame(&mut out, Kind::Machine, b"{}").unwrap();
        write_memory(&mut out, 0x1000, &[7; 16]).unwrap();
        write_frame(&mut out, Kind::Done, &[]).unwrap();
        let mut r = std::io::Cursor::new(out);
        read_preamble(&mut r).unwrap();
        assert_eq!(expect(&mut r, Kind::Machine).unwrap().unwrap(), b"{}");
        let h = read_header(&mut r).unwrap();
        assert_eq!((h.kind, h.memory_len()), (Kind::Memory, 16));
        assert_eq!(read_address(&mut r).unwrap(), 0x1000);
        let mut buf = [0u8; 16];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [7; 16]);
        assert!(expect(&mut r, Kind::Done).unwrap().is_ok());
    }

    #[test]
    fn broken_preambles_are_refused() {
        assert!(matches!(
            read_preamble(&mut stream(&[b"VESSELMG"])),
            Err(WireError::Io(_))
        ));
        assert!(matches!(
            read_preamble(&mut stream(&[b"QEMUVMST", &1u32.to_le_bytes()])),
            Err(WireError::Magic)
        ));
        let err = read_preamble(&mut stream(&[&MAGIC, &2u32.to_le_bytes()])).unwrap_err();
        assert!(matches!(err, WireError::Version { found: 2 }));
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn hostile_headers_are_refused_before_anything_is_read() {
        let header = |kind: u32, len: u32| [kind.to_le_bytes(), len.to_le_bytes()].concat();
        // An unknown kind.
        assert!(matches!(
            read_header(&mut stream(&[&header(99, 0)])),
            Err(WireError::UnknownKind(99))
        ));
        // Oversized lengths, for every kind with a payload and for an empty kind.
        for (kind, max) in [
            (1, MAX_MACHINE_BYTES),
            (2, MAX_MEMORY_CHUNK + 8),
            (3, MAX_STATE_BYTES),
            (17, MAX_ERROR_BYTES),
            (4, 0),
        ] {
            assert!(
                matches!(
                    read_header(&mut stream(&[&header(kind, max + 1)])),
                    Err(WireError::TooLong { .. })
                ),
                "kind {kind}"
            );
        }
        assert!(matches!(
            read_header(&mut stream(&[&header(2, u32::MAX)])),
            Err(WireError::TooLong { .. })
        ));
        // A memory frame too short for its address.
        assert!(matches!(
            read_header(&mut stream(&[&header(2, 7)])),
            Err(WireError::BadLength { .. })
        ));
        // A truncated header and a truncated payload.
        assert!(matches!(
            read_header(&mut stream(&[&[1, 0, 0]])),
            Err(WireError::Io(_))
        ));
        assert!(matches!(
            expect(&mut stream(&[&header(1, 10), b"{}"]), Kind::Machine),
            Err(WireError::Io(_))
        ));
        // A frame of the wrong kind, and the other end's error.
        assert!(matches!(
            expect(&mut stream(&[&header(4, 0)]), Kind::Machine),
            Err(WireError::Unexpected { .. })
        ));
        assert_eq!(
            expect(&mut stream(&[&header(17, 3), b"bad"]), Kind::Ready).unwrap(),
            Err("bad".to_string())
        );
    }

    #[test]
    fn disk_frames_round_trip_and_bad_lengths_are_refused() {
        let mut out = Vec::new();
        write_disks(&mut out, &[1 << 30, 512]).unwrap();
        write_disk_data(&mut out, 1, 4096, &[9; 8]).unwrap();
        write_disk_zero(&mut out, 0, 1 << 20, 64 << 10).unwrap();
        let mut r = std::io::Cursor::new(out);
        assert_eq!(
            parse_disks(&expect(&mut r, Kind::Disks).unwrap().unwrap()),
            vec![1 << 30, 512]
        );
        let h = read_header(&mut r).unwrap();
        assert_eq!((h.kind, h.disk_data_len()), (Kind::DiskData, 8));
        assert_eq!(read_disk_prefix(&mut r).unwrap(), (1, 4096));
        let mut buf = [0u8; 8];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [9; 8]);
        let zero = expect(&mut r, Kind::DiskZero).unwrap().unwrap();
        assert_eq!(parse_disk_zero(&zero), (0, 1 << 20, 64 << 10));
        let header = |kind: u32, len: u32| [kind.to_le_bytes(), len.to_le_bytes()].concat();
        for (kind, len) in [(5, 12), (5, MAX_DISKS * 8 + 8), (6, 11), (7, 19), (7, 21)] {
            assert!(
                read_header(&mut stream(&[&header(kind, len)])).is_err(),
                "kind {kind} of {len} bytes"
            );
        }
        assert!(write_disks(&mut Vec::new(), &[0; MAX_DISKS as usize + 1]).is_err());
    }

    #[test]
    fn writers_refuse_what_readers_would() {
        let mut out = Vec::new();
        let big = vec![0u8; MAX_MEMORY_CHUNK as usize + 1];
        assert!(write_memory(&mut out, 0, &big).is_err());
        assert!(write_frame(&mut out, Kind::Go, b"x").is_err());
        assert!(out.is_empty());
    }
}
