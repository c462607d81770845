//! Fuzz the split virtqueue and the virtio-blk request path: guest memory contents, ring
//! placement, queue size, negotiated ring features and the device's starting ring indices
//! all come from the input. The device must never panic or hang, and must never touch
//! memory outside the guest region or the disk outside its size.
#![no_main]

use std::path::{Path, PathBuf};

use block::{Allocation, DiskImage, Error, Extent, Format, Result};
use libfuzzer_sys::fuzz_target;
use virtio::blk::Block;
use virtio::{Queue, QueueLayout, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 0x10000;
const DISK_SIZE: usize = 0x8000;

struct FuzzDisk {
    data: Vec<u8>,
    read_only: bool,
    path: PathBuf,
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
        let at = self.range(offset, buf.len() as u64).expect("device checked the range");
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
        Ok(vec![Extent { offset, len, state: Allocation::Data }])
    }
    fn allocated_bytes(&self) -> Result<u64> {
        Ok(self.data.len() as u64)
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

fn u16_at(d: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([d[i], d[i + 1]])
}

fuzz_target!(|data: &[u8]| {
    // Control block: size, flags, ring addresses (in 16-byte units), starting avail index.
    if data.len() < 12 {
        return;
    }
    let (ctl, contents) = data.split_at(12);
    let size = u16_at(ctl, 0) % 512;
    let flags = ctl[2];
    let layout = QueueLayout {
        size,
        desc: u64::from(u16_at(ctl, 3) & 0x0fff) * 16,
        avail: u64::from(u16_at(ctl, 5) & 0x0fff) * 16,
        used: u64::from(u16_at(ctl, 7) & 0x0fff) * 16,
    };
    let rounds = 1 + (ctl[9] % 4);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let n = contents.len().min(MEM_SIZE);
    mem.write_slice(&contents[..n], GuestAddress(0)).unwrap();

    let Ok(mut queue) = Queue::new(&mem, layout, flags & 1 != 0, flags & 2 != 0) else { return };
    let disk = FuzzDisk { data: vec![0x5a; DISK_SIZE], read_only: flags & 4 != 0, path: PathBuf::from("fuzz") };
    let mut blk = Block::new(Box::new(disk), "fuzz");
    for _ in 0..rounds {
        match blk.process_queue(0, &mut queue, &mem) {
            Ok(_) => {
                let _ = queue.needs_notification(&mem);
            }
            Err(_) => break,
        }
    }
});
