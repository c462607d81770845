//! An in-memory disk for the virtio fuzz targets; it asserts the device's range and
//! read-only checks held.

use std::path::{Path, PathBuf};

use block::{Allocation, DiskImage, Error, Extent, Format, Result};

pub struct FuzzDisk {
    data: Vec<u8>,
    read_only: bool,
    path: PathBuf,
}

impl FuzzDisk {
    pub fn new(size: usize, read_only: bool) -> Self {
        Self {
            data: vec![0x5a; size],
            read_only,
            path: PathBuf::from("fuzz"),
        }
    }
}

impl FuzzDisk {
    fn range(&self, offset: u64, len: u64) -> Result<usize> {
        let size = self.data.len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(offset as usize),
            _ => Err(Error::OutOfRange { offset, len, size }),
        }
    }
}

impl DiskImage for FuzzDisk {
    fn format(&self) -> Format {
        Format::Raw
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        let at = self.range(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.data[at..at + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        // The device must have checked both of these already.
        assert!(!self.read_only, "write to a read-only disk");
        let at = self
            .range(offset, buf.len() as u64)
            .expect("device checked the range");
        self.data[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()> {
        assert!(!self.read_only, "zeroing a read-only disk");
        let at = self.range(offset, len).expect("device checked the range");
        self.data[at..at + len as usize].fill(0);
        Ok(())
    }
    fn allocation(&mut self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        Ok(vec![Extent {
            offset,
            len,
            state: Allocation::Data,
        }])
    }
    fn allocated_bytes(&self) -> Result<u64> {
        Ok(self.data.len() as u64)
    }
    fn path(&self) -> &Path {
        &self.path
    }
}
