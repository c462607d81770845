//! Byte-range views of a shared disk: what ext4-view and the file system probe read
//! through. A view never reads outside its partition.

use std::cell::RefCell;
use std::rc::Rc;

use block::DiskImage;

/// The disk, shared by every open file system for the duration of one search. `None` once
/// the search has handed the disk back to its owner.
pub(crate) type SharedDisk = Rc<RefCell<Option<Box<dyn DiskImage>>>>;

/// Failure of one read through a [`PartView`].
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(
        "read of {len} bytes at offset {offset} runs past the end of the partition ({size} bytes)"
    )]
    PastEnd { offset: u64, len: usize, size: u64 },
    #[error("{0}")]
    Disk(#[from] block::Error),
    #[error("the disk is no longer available")]
    Gone,
}

/// Bytes `[start, start + len)` of the shared disk.
#[derive(Clone)]
pub(crate) struct PartView {
    disk: SharedDisk,
    start: u64,
    len: u64,
}

impl PartView {
    pub(crate) fn new(disk: SharedDisk, start: u64, len: u64) -> PartView {
        PartView { disk, start, len }
    }

    /// Fill `buf` from `offset` within the partition.
    pub(crate) fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let past_end = || ReadError::PastEnd {
            offset,
            len: buf.len(),
            size: self.len,
        };
        let end = offset.checked_add(buf.len() as u64).ok_or_else(past_end)?;
        if end > self.len {
            return Err(past_end());
        }
        let absolute = self.start.checked_add(offset).ok_or_else(past_end)?;
        let mut disk = self.disk.borrow_mut();
        let disk = disk.as_mut().ok_or(ReadError::Gone)?;
        disk.read_at(buf, absolute)?;
        Ok(())
    }
}

impl ext4_view::Ext4Read for PartView {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        PartView::read_at(self, start_byte, dst).map_err(|e| Box::new(e) as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memdisk::MemDisk;

    #[test]
    fn views_stay_inside() {
        let disk: SharedDisk = Rc::new(RefCell::new(Some(Box::new(MemDisk::new(
            (0..100u8).collect(),
        )))));
        let v = PartView::new(disk.clone(), 10, 20);
        let mut b = [0u8; 4];
        v.read_at(16, &mut b).unwrap();
        assert_eq!(b, [26, 27, 28, 29]);
        assert!(matches!(
            v.read_at(17, &mut b),
            Err(ReadError::PastEnd { .. })
        ));
        assert!(v.read_at(u64::MAX, &mut b).is_err());
        disk.borrow_mut().take();
        assert!(matches!(v.read_at(0, &mut b), Err(ReadError::Gone)));
    }
}
