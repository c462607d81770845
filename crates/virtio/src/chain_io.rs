//! Byte streams over the readable and writable halves of a descriptor chain, so devices
//! make no assumption about how the driver split a request into descriptors.

use vm_memory::{Bytes, GuestMemoryError, GuestMemoryMmap};

use crate::queue::Segment;

#[derive(Debug, thiserror::Error)]
pub enum ChainIoError {
    #[error("the chain holds fewer bytes than the request needs")]
    Short,
    #[error("guest memory access failed: {0}")]
    Memory(#[from] GuestMemoryError),
}

/// Split `segs` into (device-readable, device-writable). Chains were checked to put every
/// readable buffer first.
pub fn split(segs: &[Segment]) -> (&[Segment], &[Segment]) {
    let at = segs.iter().position(|s| s.writable).unwrap_or(segs.len());
    segs.split_at(at)
}

/// Position in a list of segments.
struct Cursor<'a> {
    segs: &'a [Segment],
    index: usize,
    offset: u32,
    remaining: u64,
}

impl<'a> Cursor<'a> {
    fn new(segs: &'a [Segment]) -> Self {
        Self {
            segs,
            index: 0,
            offset: 0,
            remaining: segs.iter().map(|s| u64::from(s.len)).sum(),
        }
    }

    /// The next contiguous piece of at most `max` bytes: (guest address, length).
    fn next_piece(&mut self, max: usize) -> Option<(vm_memory::GuestAddress, usize)> {
        while let Some(seg) = self.segs.get(self.index) {
            let left = seg.len - self.offset;
            if left == 0 {
                self.index += 1;
                self.offset = 0;
                continue;
            }
            let n = (left as usize).min(max);
            let addr = vm_memory::GuestAddress(seg.addr.0 + u64::from(self.offset));
            self.offset += n as u32;
            self.remaining -= n as u64;
            return Some((addr, n));
        }
        None
    }
}

/// Reads the device-readable buffers of a chain in order.
pub struct ChainReader<'a> {
    mem: &'a GuestMemoryMmap,
    cursor: Cursor<'a>,
}

impl<'a> ChainReader<'a> {
    pub fn new(mem: &'a GuestMemoryMmap, segs: &'a [Segment]) -> Self {
        Self {
            mem,
            cursor: Cursor::new(segs),
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> u64 {
        self.cursor.remaining
    }

    /// Fill `buf` completely, or fail with [`ChainIoError::Short`] (consuming what was there).
    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ChainIoError> {
        let mut done = 0;
        while done < buf.len() {
            let (addr, n) = self
                .cursor
                .next_piece(buf.len() - done)
                .ok_or(ChainIoError::Short)?;
            self.mem.read_slice(&mut buf[done..done + n], addr)?;
            done += n;
        }
        Ok(())
    }
}

/// Writes the device-writable buffers of a chain in order.
pub struct ChainWriter<'a> {
    mem: &'a GuestMemoryMmap,
    cursor: Cursor<'a>,
    written: u64,
}

impl<'a> ChainWriter<'a> {
    pub fn new(mem: &'a GuestMemoryMmap, segs: &'a [Segment]) -> Self {
        Self {
            mem,
            cursor: Cursor::new(segs),
            written: 0,
        }
    }

    /// Room left.
    pub fn remaining(&self) -> u64 {
        self.cursor.remaining
    }

    /// Bytes written so far (the used-ring length).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Write all of `buf`, or fail with [`ChainIoError::Short`] after writing what fits.
    pub fn write_all(&mut self, buf: &[u8]) -> Result<(), ChainIoError> {
        let mut done = 0;
        while done < buf.len() {
            let (addr, n) = self
                .cursor
                .next_piece(buf.len() - done)
                .ok_or(ChainIoError::Short)?;
            self.mem.write_slice(&buf[done..done + n], addr)?;
            done += n;
            self.written += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    #[test]
    fn streams_cross_segments() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
        mem.write_slice(b"hello", GuestAddress(0x100)).unwrap();
        mem.write_slice(b" world", GuestAddress(0x200)).unwrap();
        let segs = [
            Segment {
                addr: GuestAddress(0x100),
                len: 5,
                writable: false,
            },
            Segment {
                addr: GuestAddress(0x200),
                len: 6,
                writable: false,
            },
            Segment {
                addr: GuestAddress(0x300),
                len: 3,
                writable: true,
            },
            Segment {
                addr: GuestAddress(0x400),
                len: 3,
                writable: true,
            },
        ];
        let (r, w) = split(&segs);
        let mut reader = ChainReader::new(&mem, r);
        let mut buf = [0u8; 11];
        reader.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello world");
        assert!(matches!(
            reader.read_exact(&mut [0u8; 1]),
            Err(ChainIoError::Short)
        ));
        let mut writer = ChainWriter::new(&mem, w);
        writer.write_all(b"abcd").unwrap();
        assert_eq!(writer.written(), 4);
        assert_eq!(writer.remaining(), 2);
        assert!(matches!(writer.write_all(b"xyz"), Err(ChainIoError::Short)));
        assert_eq!(writer.written(), 6);
        let mut out = [0u8; 3];
        mem.read_slice(&mut out, GuestAddress(0x400)).unwrap();
        assert_eq!(&out, b"dxy");
    }
}
