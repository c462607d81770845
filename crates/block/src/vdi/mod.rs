//! VirtualBox VDI images (format version 1.1): dynamic and fixed.
//!
//! Layout: a 512-byte header, the block map (one little-endian `u32` per virtual block:
//! the physical slot of the block in the data area, or [`BLOCK_FREE`] / [`BLOCK_ZERO`]),
//! then the data area of equally sized block slots. New blocks are appended; discarding a
//! whole block marks it [`BLOCK_ZERO`] and moves the last slot into the freed one so the
//! slots stay dense (qemu and VirtualBox append at `blocks_allocated`).

mod header;

use std::path::Path;

pub(crate) use crate::image_file::ImageFile;
use crate::image_file::{block_pieces, check_range, push_extent};
use header::{Header, BLOCK_FREE, BLOCK_ZERO, DEFAULT_BLOCK_SIZE, SECTOR, TYPE_FIXED};

use crate::{Allocation, CreateOptions, DiskImage, Error, Extent, Format, OpenOptions, Result};

/// Bytes copied at a time when a block slot moves.
const COPY_CHUNK: u64 = 1 << 20;

/// An open VDI image.
#[derive(Debug)]
pub struct VdiImage {
    file: ImageFile,
    header: Header,
    /// Slot of each virtual block, or a FREE / ZERO marker.
    bmap: Vec<u32>,
    /// Virtual block stored in each slot (dense: `slot_owner.len() == blocks_allocated`).
    slot_owner: Vec<u32>,
    /// Slots below `slot_owner.len()` that no block uses (only in images we did not write).
    free_slots: Vec<u32>,
    read_only: bool,
}

/// Open a VDI image.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
    Ok(Box::new(VdiImage::open(path, opts.read_only)?))
}

/// Create a VDI image of `size` bytes (dynamic, or fixed with `opts.fixed`).
pub fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<()> {
    if opts.backing.is_some() {
        return Err(Error::InvalidArgument(
            "VDI images cannot have a backing file".into(),
        ));
    }
    if !size.is_multiple_of(SECTOR) || size > Header::max_disk_size() {
        return Err(Error::InvalidArgument(format!(
            "VDI size {size} must be a multiple of 512 and at most {}",
            Header::max_disk_size()
        )));
    }
    let block_size = match opts.cluster_size {
        None => DEFAULT_BLOCK_SIZE,
        Some(b) if b.is_power_of_two() && (1 << 20..=256 << 20).contains(&b) => b as u32,
        Some(b) => {
            return Err(Error::InvalidArgument(format!(
                "VDI block size {b} must be a power of two from 1 MiB to 256 MiB"
            )))
        }
    };
    let header = Header::new(size, block_size, opts.fixed);
    let file = ImageFile::create(path, Format::Vdi)?;
    let blocks = header.blocks_in_image;
    let bmap: Vec<u8> = (0..blocks)
        .flat_map(|i| if opts.fixed { i } else { BLOCK_FREE }.to_le_bytes())
        .collect();
    file.write_all_at(&header.raw, 0)?;
    file.write_all_at(&bmap, u64::from(header.offset_bmap))?;
    let data_end = u64::from(header.offset_data)
        + if opts.fixed {
            u64::from(blocks) * header.slot_size()
        } else {
            0
        };
    if opts.fixed {
        file.preallocate(
            u64::from(header.offset_data),
            data_end - u64::from(header.offset_data),
        )?;
    }
    file.set_len(data_end)?;
    file.sync_data()
}

impl VdiImage {
    fn open(path: &Path, read_only: bool) -> Result<VdiImage> {
        let file = ImageFile::open(path, read_only, Format::Vdi)?;
        let header = Header::read(&file)?;
        let bmap_bytes = u64::from(header.blocks_in_image) * 4;
        crate::budget::charge(path, "block map", bmap_bytes)?;
        let mut raw = vec![0u8; bmap_bytes as usize];
        file.read_exact_at(&mut raw, u64::from(header.offset_bmap), "block map")?;
        let bmap: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut slot_owner = vec![BLOCK_FREE; bmap.len()];
        let mut slots = 0usize;
        for (block, &slot) in bmap.iter().enumerate() {
            if slot == BLOCK_FREE || slot == BLOCK_ZERO {
                continue;
            }
            let owner = slot_owner.get_mut(slot as usize).ok_or_else(|| {
                file.corrupt(format!(
                    "block {block} maps to slot {slot}, beyond the block count"
                ))
            })?;
            if *owner != BLOCK_FREE {
                return Err(file.corrupt(format!(
                    "blocks {} and {block} both map to slot {slot}",
                    *owner
                )));
            }
            *owner = block as u32;
            slots = slots.max(slot as usize + 1);
        }
        slot_owner.truncate(slots);
        let free_slots = (0..slots as u32)
            .filter(|&s| slot_owner[s as usize] == BLOCK_FREE)
            .collect();
        if header.image_type == TYPE_FIXED
            && bmap.iter().any(|&s| s == BLOCK_FREE || s == BLOCK_ZERO)
        {
            return Err(file.corrupt("fixed image with unallocated blocks"));
        }
        let mut img = VdiImage {
            file,
            header,
            bmap,
            slot_owner,
            free_slots,
            read_only,
        };
        // An interrupted allocation leaves the block count one ahead of the map: repair.
        if !read_only && img.header.blocks_allocated != img.allocated_count() {
            img.header.blocks_allocated = img.allocated_count();
            img.write_header()?;
            img.file.sync_data()?;
        }
        Ok(img)
    }

    fn block_size(&self) -> u64 {
        u64::from(self.header.block_size)
    }

    fn allocated_count(&self) -> u32 {
        (self.slot_owner.len() - self.free_slots.len()) as u32
    }

    fn write_header(&mut self) -> Result<()> {
        self.header.store();
        self.file.write_all_at(&self.header.raw, 0)
    }

    fn write_bmap_entry(&self, block: u32) -> Result<()> {
        let off = u64::from(self.header.offset_bmap) + u64::from(block) * 4;
        self.file
            .write_all_at(&self.bmap[block as usize].to_le_bytes(), off)
    }

    fn is_allocated(entry: u32) -> bool {
        entry != BLOCK_FREE && entry != BLOCK_ZERO
    }

    /// Give `block` a slot: the first unused slot (slots vacated without compaction), else a
    /// new one at the end. The slot reads as zeroes.
    fn allocate(&mut self, block: u32) -> Result<u32> {
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                if self.slot_owner.len() >= self.bmap.len() {
                    return Err(self
                        .file
                        .corrupt("no free block slot left in the data area"));
                }
                self.slot_owner.push(BLOCK_FREE);
                (self.slot_owner.len() - 1) as u32
            }
        };
        let start = self.header.slot_offset(slot);
        let end = start + self.block_size();
        let file_len = self.file.len()?;
        if start < file_len {
            self.file.zero_range(start, end.min(file_len) - start)?;
        }
        if end > file_len {
            self.file.set_len(end)?;
        }
        // Count first, map entry second: after a crash in between, the count is one too
        // high (an unused slot at the end), never too low, so a writer that appends at
        // `blocks_allocated` (qemu) cannot reuse a live slot.
        self.slot_owner[slot as usize] = block;
        self.header.blocks_allocated = self.allocated_count();
        self.write_header()?;
        self.bmap[block as usize] = slot;
        self.write_bmap_entry(block)?;
        Ok(slot)
    }

    /// Drop the data of a whole dynamic block: mark it ZERO, then move the last slot into
    /// the freed one and shorten the file. Every step leaves a consistent map on a crash.
    fn unmap_block(&mut self, block: u32) -> Result<()> {
        let slot = self.bmap[block as usize];
        self.bmap[block as usize] = BLOCK_ZERO;
        self.write_bmap_entry(block)?;
        if !Self::is_allocated(slot) {
            return Ok(());
        }
        self.slot_owner[slot as usize] = BLOCK_FREE;
        // The last slot is always in use: move it into the freed slot.
        let last = (self.slot_owner.len() - 1) as u32;
        if slot != last {
            let mover = self.slot_owner[last as usize];
            let (from, to) = (self.header.slot_offset(last), self.header.slot_offset(slot));
            let mut buf = vec![0u8; self.block_size().min(COPY_CHUNK) as usize];
            let mut done = 0;
            while done < self.block_size() {
                self.file.read_padded_at(&mut buf, from + done)?;
                self.file.write_all_at(&buf, to + done)?;
                done += buf.len() as u64;
            }
            // The copy must be durable before the map points at it, and the map before
            // the file is shortened.
            self.file.sync_data()?;
            self.bmap[mover as usize] = slot;
            self.write_bmap_entry(mover)?;
            self.file.sync_data()?;
            self.slot_owner[slot as usize] = mover;
            self.slot_owner[last as usize] = BLOCK_FREE;
        }
        while self.slot_owner.last() == Some(&BLOCK_FREE) {
            self.slot_owner.pop();
            let gone = self.slot_owner.len() as u32;
            self.free_slots.retain(|&s| s != gone);
        }
        self.header.blocks_allocated = self.allocated_count();
        self.write_header()?;
        let data_end = u64::from(self.header.offset_data)
            + self.slot_owner.len() as u64 * self.header.slot_size();
        self.file.set_len(data_end)
    }

    /// Make `[offset, offset + len)` read as zeroes, unmapping whole blocks of dynamic images.
    fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        check_range(offset, len, self.size())?;
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let bs = self.block_size();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let block = (pos / bs) as u32;
            let in_block = pos % bs;
            let n = (bs - in_block).min(end - pos);
            let entry = self.bmap[block as usize];
            if n == bs && self.header.image_type != TYPE_FIXED {
                self.unmap_block(block)?;
            } else if Self::is_allocated(entry) {
                self.file
                    .zero_range(self.header.slot_offset(entry) + in_block, n)?;
            }
            pos += n;
        }
        Ok(())
    }
}

impl DiskImage for VdiImage {
    fn format(&self) -> Format {
        Format::Vdi
    }

    fn size(&self) -> u64 {
        self.header.disk_size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size())?;
        let bs = self.block_size();
        for (pos, piece) in block_pieces(offset, buf.len(), bs) {
            let entry = self.bmap[(pos / bs) as usize];
            let chunk = &mut buf[piece];
            if Self::is_allocated(entry) {
                self.file
                    .read_padded_at(chunk, self.header.slot_offset(entry) + pos % bs)?;
            } else {
                chunk.fill(0);
            }
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size())?;
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let bs = self.block_size();
        for (pos, piece) in block_pieces(offset, buf.len(), bs) {
            let block = (pos / bs) as u32;
            let chunk = &buf[piece];
            let mut entry = self.bmap[block as usize];
            if !Self::is_allocated(entry) {
                if chunk.iter().all(|&b| b == 0) {
                    continue;
                }
                entry = self.allocate(block)?;
            }
            self.file
                .write_all_at(chunk, self.header.slot_offset(entry) + pos % bs)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.zero(offset, len)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()> {
        self.zero(offset, len)
    }

    fn allocation(&mut self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(offset, len, self.size())?;
        let bs = self.block_size();
        let mut map = Vec::new();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = (bs - pos % bs).min(end - pos);
            let state = if Self::is_allocated(self.bmap[(pos / bs) as usize]) {
                Allocation::Data
            } else {
                Allocation::Zero
            };
            push_extent(&mut map, pos, n, state);
            pos += n;
        }
        Ok(map)
    }

    fn allocated_bytes(&self) -> Result<u64> {
        self.file.allocated_bytes()
    }

    fn path(&self) -> &Path {
        self.file.path()
    }
}

#[cfg(test)]
mod tests;
