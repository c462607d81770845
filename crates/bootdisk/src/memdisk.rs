//! An in-memory [`DiskImage`] (for tests and fuzzing) and the empty stand-in that takes a
//! caller's disk's place while [`crate::find_boot`] holds it.

use std::path::{Path, PathBuf};

use block::{Allocation, DiskImage, Extent, Format};

/// A raw disk held in memory. Read-only: writes fail with [`block::Error::ReadOnly`].
pub struct MemDisk {
    data: Vec<u8>,
    path: PathBuf,
}

impl MemDisk {
    /// A disk whose contents are `data`.
    pub fn new(data: Vec<u8>) -> MemDisk {
        MemDisk {
            data,
            path: PathBuf::from("<memory>"),
        }
    }
}

fn out_of_range(offset: u64, len: usize, size: u64) -> block::Error {
    block::Error::OutOfRange {
        offset,
        len: len as u64,
        size,
    }
}

impl DiskImage for MemDisk {
    fn format(&self) -> Format {
        Format::Raw
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_only(&self) -> bool {
        true
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> block::Result<()> {
        let size = self.size();
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.data.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| out_of_range(offset, buf.len(), size))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&mut self, _buf: &[u8], _offset: u64) -> block::Result<()> {
        Err(block::Error::ReadOnly)
    }
    fn flush(&mut self) -> block::Result<()> {
        Ok(())
    }
    fn discard(&mut self, _offset: u64, _len: u64) -> block::Result<()> {
        Err(block::Error::ReadOnly)
    }
    fn write_zeroes(&mut self, _offset: u64, _len: u64) -> block::Result<()> {
        Err(block::Error::ReadOnly)
    }
    fn allocation(&mut self, offset: u64, len: u64) -> block::Result<Vec<Extent>> {
        Ok(vec![Extent {
            offset,
            len,
            state: Allocation::Data,
        }])
    }
    fn allocated_bytes(&self) -> block::Result<u64> {
        Ok(self.size())
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

/// Zero-sized stand-in left in the caller's `Box` while the real disk is borrowed.
pub(crate) fn vacant() -> Box<dyn DiskImage> {
    Box::new(MemDisk::new(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let mut d = MemDisk::new(vec![1, 2, 3, 4]);
        let mut b = [0u8; 2];
        d.read_at(&mut b, 2).unwrap();
        assert_eq!(b, [3, 4]);
        assert!(d.read_at(&mut b, 3).is_err());
        assert!(d.read_at(&mut b, u64::MAX).is_err());
    }
}
