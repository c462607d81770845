//! Byte streams over the readable and writable halves of a descriptor chain, so devices
//! make no assumption about how the driver split a request into descriptors.

use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap};

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

impl Cursor<'_> {
    /// Start of the unread bytes when they form one contiguous guest-physical range.
    fn contiguous(&self) -> Option<vm_memory::GuestAddress> {
        let mut rest = self.segs.get(self.index..)?.iter();
        let first = rest.next()?;
        let start = first.addr.0 + u64::from(self.offset);
        let mut end = first.addr.0 + u64::from(first.len);
        for seg in rest {
            if seg.addr.0 != end {
                return None;
            }
            end += u64::from(seg.len);
        }
        Some(vm_memory::GuestAddress(start))
    }

    /// Consume `n` bytes (at most what is left).
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some((_, step)) = self.next_piece(n) else {
                return;
            };
            n -= step;
        }
    }
}

/// The host mapping of `len` guest bytes at `addr`, when they lie in one memory region
/// and `addr` is `align`-aligned.
fn host_range(
    mem: &GuestMemoryMmap,
    addr: vm_memory::GuestAddress,
    len: usize,
    align: u64,
) -> Option<*mut u8> {
    if !addr.0.is_multiple_of(align) || len == 0 {
        return None;
    }
    let slice = mem.get_slice(addr, len).ok()?;
    let ptr = slice.ptr_guard_mut().as_ptr();
    Some(ptr)
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

    /// When the next `len` bytes are one contiguous, `align`-aligned range of guest memory,
    /// hand them to `consume` without copying (e.g. straight to a disk write) and advance;
    /// `None` when they are not (the caller copies through a buffer instead).
    pub fn consume_direct<E>(
        &mut self,
        len: usize,
        align: u64,
        consume: impl FnOnce(&[u8]) -> Result<(), E>,
    ) -> Option<Result<(), E>> {
        if self.remaining() < len as u64 {
            return None;
        }
        let ptr = host_range(self.mem, self.cursor.contiguous()?, len, align)?;
        // SAFETY: `host_range` checked that `len` bytes at `ptr` lie inside one mapped
        // guest memory region, which stays mapped while `self.mem` is borrowed. The guest
        // may change these bytes concurrently; any u8 value is valid, and the device only
        // copies them out, as a DMA engine would.
        let buf = unsafe { std::slice::from_raw_parts(ptr, len) };
        let result = consume(buf);
        if result.is_ok() {
            self.cursor.advance(len);
        }
        Some(result)
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

    /// When the next `len` writable bytes are one contiguous, `align`-aligned range of
    /// guest memory, let `fill` write them in place (e.g. a disk read straight into the
    /// guest's buffer) and count them as written; `None` when they are not.
    pub fn fill_direct<E>(
        &mut self,
        len: usize,
        align: u64,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Option<Result<(), E>> {
        if self.remaining() < len as u64 {
            return None;
        }
        let addr = self.cursor.contiguous()?;
        let ptr = host_range(self.mem, addr, len, align)?;
        // SAFETY: `host_range` checked that `len` bytes at `ptr` lie inside one mapped
        // guest memory region, which stays mapped while `self.mem` is borrowed, and no
        // other reference to guest memory is held by the VMM meanwhile (all other accesses
        // go through vm-memory's volatile copies). The guest may touch the bytes
        // concurrently, as it could during a real device's DMA; any u8 value is valid.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let result = fill(buf);
        // Logged even when `fill` failed part-way: it may have written some of the bytes.
        dirty_log::mark(addr.0, len as u64);
        if result.is_ok() {
            self.cursor.advance(len);
            self.written += len as u64;
        }
        Some(result)
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
            dirty_log::mark(addr.0, n as u64);
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

    #[test]
    fn direct_access_needs_contiguous_aligned_memory() {
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x4000),
            (GuestAddress(0x4000), 0x4000),
        ])
        .unwrap();
        let adjacent = [
            Segment {
                addr: GuestAddress(0x1000),
                len: 0x800,
                writable: true,
            },
            Segment {
                addr: GuestAddress(0x1800),
                len: 0x800,
                writable: true,
            },
        ];
        let mut writer = ChainWriter::new(&mem, &adjacent);
        let r: Option<Result<(), ()>> = writer.fill_direct(0x1000, 0x1000, |buf| {
            buf.fill(0xab);
            Ok(())
        });
        assert_eq!(r, Some(Ok(())));
        assert_eq!(writer.written(), 0x1000);
        assert_eq!(writer.remaining(), 0);
        let mut out = [0u8; 0x1000];
        mem.read_slice(&mut out, GuestAddress(0x1000)).unwrap();
        assert!(out.iter().all(|&b| b == 0xab));

        let gap = [
            Segment {
                addr: GuestAddress(0x1000),
                len: 0x800,
                writable: true,
            },
            Segment {
                addr: GuestAddress(0x2000),
                len: 0x800,
                writable: true,
            },
        ];
        let mut writer = ChainWriter::new(&mem, &gap);
        assert!(writer
            .fill_direct(0x1000, 512, |_| Ok::<(), ()>(()))
            .is_none());
        let misaligned = [Segment {
            addr: GuestAddress(0x1200),
            len: 0x1000,
            writable: true,
        }];
        let mut writer = ChainWriter::new(&mem, &misaligned);
        assert!(writer
            .fill_direct(0x1000, 0x1000, |_| Ok::<(), ()>(()))
            .is_none());
        // Contiguous in guest-physical terms but split across two regions.
        let across = [Segment {
            addr: GuestAddress(0x3000),
            len: 0x2000,
            writable: false,
        }];
        let mut reader = ChainReader::new(&mem, &across);
        assert!(reader
            .consume_direct(0x2000, 0x1000, |_| Ok::<(), ()>(()))
            .is_none());
        let inside = [Segment {
            addr: GuestAddress(0x1000),
            len: 0x1000,
            writable: false,
        }];
        let mut reader = ChainReader::new(&mem, &inside);
        let r = reader.consume_direct(0x1000, 0x1000, |buf| {
            if buf[5] == 0xab {
                Ok(())
            } else {
                Err(())
            }
        });
        assert_eq!(r, Some(Ok(())));
        assert_eq!(reader.remaining(), 0);
    }
}
