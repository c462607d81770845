//! An in-memory DiskImage for tests, counting flushes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use block::{Allocation, DiskImage, Error, Extent, Format, Result};

#[derive(Clone, Default)]
pub struct DiskState {
    pub data: Arc<Mutex<Vec<u8>>>,
    pub flushes: Arc<AtomicUsize>,
    pub discards: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl DiskState {
    pub fn flushes(&self) -> usize {
        self.flushes.load(Ordering::SeqCst)
    }
    pub fn bytes(&self, offset: usize, len: usize) -> Vec<u8> {
        self.data.lock().unwrap()[offset..offset + len].to_vec()
    }
}

pub struct MemDisk {
    pub state: DiskState,
    read_only: bool,
    path: PathBuf,
}

impl MemDisk {
    pub fn new(size: usize, read_only: bool) -> (Self, DiskState) {
        let state = DiskState::default();
        *state.data.lock().unwrap() = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        (
            Self {
                state: state.clone(),
                read_only,
                path: PathBuf::from("mem"),
            },
            state,
        )
    }

    fn check(&self, offset: u64, len: u64) -> Result<usize> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(offset as usize),
            _ => Err(Error::OutOfRange { offset, len, size }),
        }
    }
}

impl DiskImage for MemDisk {
    fn format(&self) -> Format {
        Format::Raw
    }
    fn size(&self) -> u64 {
        self.state.data.lock().unwrap().len() as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        let at = self.check(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.state.data.lock().unwrap()[at..at + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let at = self.check(offset, buf.len() as u64)?;
        self.state.data.lock().unwrap()[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        self.state.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.state.discards.lock().unwrap().push((offset, len));
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()> {
        let at = self.check(offset, len)?;
        self.state.data.lock().unwrap()[at..at + len as usize].fill(0);
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
        Ok(self.size())
    }
    fn path(&self) -> &Path {
        &self.path
    }
}
