//! VHDX images: dynamic, fixed and differencing (read/write/create).
//!
//! Opening replays a non-empty metadata log (into the file when writable, into an
//! in-memory overlay when read-only) before any other metadata is read. Block
//! allocation is ordered for crash safety instead of going through the log: the new
//! block's data is written and made durable before the BAT entry that points at it, so
//! a crash leaves at worst an unreferenced block, never a BAT entry to garbage.

mod crc32c;
mod create;
mod headers;
mod log;
mod metadata;
mod parent;

use std::path::Path;

pub use create::create;
use headers::{read_current_header, read_regions, write_headers, Header, MIB};
use log::{apply, find_replay, LogWrite, Patched};
use metadata::{read_metadata, Metadata};

use crate::image_file::{
    block_pieces, check_range, le_u64, push_extent, random_uuid, ImageFile, MAX_TABLE_BYTES,
};
use crate::{Allocation, DiskImage, Error, Extent, Format, OpenOptions, Result};

/// BAT entry states (low 3 bits).
const PAYLOAD_NOT_PRESENT: u64 = 0;
const PAYLOAD_UNDEFINED: u64 = 1;
const PAYLOAD_ZERO: u64 = 2;
const PAYLOAD_UNMAPPED: u64 = 3;
const PAYLOAD_FULLY_PRESENT: u64 = 6;
const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;
const SB_PRESENT: u64 = 6;
const STATE_MASK: u64 = 7;

/// Sectors described by one sector bitmap block (1 MiB of bits).
const SECTORS_PER_BITMAP: u64 = 1 << 23;

/// An open VHDX image.
pub struct VhdxImage {
    file: ImageFile,
    header: Header,
    header_slot: usize,
    meta: Metadata,
    bat_offset: u64,
    bat: Vec<u64>,
    chunk_ratio: u64,
    /// Log writes of a read-only open, applied on every read.
    overlay: Vec<LogWrite>,
    parent: Option<Box<dyn DiskImage>>,
    read_only: bool,
    /// Whether the write GUIDs were renewed for this session's first modification.
    write_guids_renewed: bool,
    /// Blocks unmapped in this session, reusable once their unmapping is durable.
    free_blocks: Vec<u64>,
    next_block: u64,
}

/// Open a VHDX image.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
    Ok(Box::new(VhdxImage::open(
        path,
        opts.read_only,
        opts.allow_external_backing,
    )?))
}

impl VhdxImage {
    /// `allow_external` as in [`OpenOptions::allow_external_backing`], for the parent.
    fn open(path: &Path, read_only: bool, allow_external: bool) -> Result<VhdxImage> {
        let file = ImageFile::open(path, read_only, Format::Vhdx)?;
        let (mut header, mut header_slot) = read_current_header(&file)?;
        let mut overlay = Vec::new();
        // A read-only replay does not extend the file: it reads as if it had been.
        let mut replayed_len = 0;
        if header.log_guid != [0; 16] {
            let file_len = file.len()?;
            if header
                .log_offset
                .checked_add(u64::from(header.log_length))
                .is_none_or(|e| e > file_len)
            {
                return Err(file.corrupt("log region is past the end of the file"));
            }
            let replay = find_replay(
                &file,
                header.log_offset,
                header.log_length,
                &header.log_guid,
            )?;
            if let Some(r) = &replay {
                if file.len()? < r.flushed_file_offset {
                    return Err(file.corrupt(format!(
                        "file is shorter than the {} bytes the log says were flushed",
                        r.flushed_file_offset
                    )));
                }
                let log_end = header.log_offset + u64::from(header.log_length);
                if r.writes
                    .iter()
                    .any(|w| w.offset < log_end && header.log_offset < w.offset + w.len)
                {
                    return Err(file.corrupt("log entry writes into the log itself"));
                }
            }
            if read_only {
                if let Some(r) = replay {
                    replayed_len = r.last_file_offset;
                    overlay = r.writes;
                }
            } else {
                if let Some(r) = replay {
                    for w in &r.writes {
                        match &w.data {
                            Some(d) => file.write_all_at(d, w.offset)?,
                            None => file.zero_range(w.offset, w.len)?,
                        }
                    }
                    if file.len()? < r.last_file_offset {
                        file.set_len(r.last_file_offset)?;
                    }
                    file.sync_data()?;
                }
                header.log_guid = [0; 16];
                write_headers(&file, &mut header, &mut header_slot)?;
            }
        }
        let src = Patched {
            file: &file,
            writes: &overlay,
        };
        let (bat_region, meta_region) = read_regions(&src, &header)?;
        let meta = read_metadata(&src, &meta_region)?;
        let block_size = u64::from(meta.block_size);
        let chunk_ratio = SECTORS_PER_BITMAP * u64::from(meta.logical_sector) / block_size;
        let blocks = meta.disk_size.div_ceil(block_size);
        let entries = if meta.has_parent {
            blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
        } else {
            blocks + blocks.saturating_sub(1) / chunk_ratio
        };
        let bat_bytes = entries * 8;
        if bat_bytes > u64::from(bat_region.length) || bat_bytes > MAX_TABLE_BYTES {
            return Err(file.corrupt(format!(
                "BAT region of {} bytes cannot hold {entries} entries",
                bat_region.length
            )));
        }
        crate::budget::charge(path, "BAT", bat_bytes)?;
        let mut raw = vec![0u8; bat_bytes as usize];
        src.read_exact_at(&mut raw, bat_region.offset, "BAT")?;
        let bat: Vec<u64> = raw.chunks_exact(8).map(|c| le_u64(c, 0)).collect();
        let file_len = file.len()?.max(replayed_len);
        let mut next_block = file_len.div_ceil(MIB) * MIB;
        for (i, &e) in bat.iter().enumerate() {
            let state = e & STATE_MASK;
            let is_bitmap = (i as u64 + 1).is_multiple_of(chunk_ratio + 1);
            let (valid, has_data, len) = if is_bitmap {
                (
                    state == PAYLOAD_NOT_PRESENT || state == SB_PRESENT,
                    state == SB_PRESENT,
                    MIB,
                )
            } else {
                let ok = matches!(
                    state,
                    PAYLOAD_NOT_PRESENT
                        | PAYLOAD_UNDEFINED
                        | PAYLOAD_ZERO
                        | PAYLOAD_UNMAPPED
                        | PAYLOAD_FULLY_PRESENT
                ) || state == PAYLOAD_PARTIALLY_PRESENT && meta.has_parent;
                (
                    ok,
                    state == PAYLOAD_FULLY_PRESENT || state == PAYLOAD_PARTIALLY_PRESENT,
                    block_size,
                )
            };
            if !valid {
                return Err(file.corrupt(format!("BAT entry {i} has invalid state {state}")));
            }
            if has_data {
                let off = (e >> 20) * MIB;
                if off < MIB || off.checked_add(len).is_none_or(|end| end > file_len) {
                    return Err(file.corrupt(format!(
                        "BAT entry {i} points at {off:#x}, outside the file of {file_len} bytes (truncated image?)"
                    )));
                }
                next_block = next_block.max(off + len);
            }
        }
        let mut img = VhdxImage {
            file,
            header,
            header_slot,
            meta,
            bat_offset: bat_region.offset,
            bat,
            chunk_ratio,
            overlay,
            parent: None,
            read_only,
            write_guids_renewed: false,
            free_blocks: Vec::new(),
            next_block,
        };
        if img.meta.has_parent {
            img.parent = Some(parent::open_parent(
                &img.file,
                &img.meta.parent_locator,
                allow_external,
            )?);
        }
        Ok(img)
    }

    fn block_size(&self) -> u64 {
        u64::from(self.meta.block_size)
    }

    fn bat_index(&self, block: u64) -> usize {
        (block + block / self.chunk_ratio) as usize
    }

    fn entry(&self, block: u64) -> u64 {
        self.bat[self.bat_index(block)]
    }

    fn set_entry(&mut self, block: u64, value: u64) -> Result<()> {
        let i = self.bat_index(block);
        self.bat[i] = value;
        self.file
            .write_all_at(&value.to_le_bytes(), self.bat_offset + i as u64 * 8)
    }

    /// Before the first change to the file: new file and data write GUIDs (MS-VHDX 2.2.2).
    fn renew_write_guids(&mut self) -> Result<()> {
        if !self.write_guids_renewed {
            self.header.file_write_guid = random_uuid();
            self.header.data_write_guid = random_uuid();
            write_headers(&self.file, &mut self.header, &mut self.header_slot)?;
            self.write_guids_renewed = true;
        }
        Ok(())
    }

    fn read_file(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_padded_at(buf, offset)?;
        if !self.overlay.is_empty() {
            apply(&self.overlay, buf, offset);
        }
        Ok(())
    }

    fn read_parent(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        buf.fill(0);
        if let Some(p) = self.parent.as_mut() {
            let psize = p.size();
            if offset < psize {
                let n = (psize - offset).min(buf.len() as u64) as usize;
                p.read_at(&mut buf[..n], offset)?;
            }
        }
        Ok(())
    }

    /// Sector presence of a partially present block: runs of (offset, len, present)
    /// covering `[offset, offset + len)` inside the block.
    fn sector_runs(&self, offset: u64, len: u64) -> Result<Vec<(u64, u64, bool)>> {
        let ls = u64::from(self.meta.logical_sector);
        let block = offset / self.block_size();
        let chunk = block / self.chunk_ratio;
        let sb = self.bat[(chunk * (self.chunk_ratio + 1) + self.chunk_ratio) as usize];
        let first = offset / ls;
        let last = (offset + len - 1) / ls;
        if sb & STATE_MASK != SB_PRESENT {
            return Ok(vec![(offset, len, false)]);
        }
        let base = (sb >> 20) * MIB;
        let chunk_first = chunk * SECTORS_PER_BITMAP;
        let mut bits = vec![0u8; ((last - first) / 8 + 2) as usize];
        let byte0 = (first - chunk_first) / 8;
        self.read_file(&mut bits, base + byte0)?;
        let present = |s: u64| {
            let rel = s - chunk_first - byte0 * 8;
            bits[(rel / 8) as usize] & (1 << (rel % 8)) != 0
        };
        let mut runs: Vec<(u64, u64, bool)> = Vec::new();
        for s in first..=last {
            let from = (s * ls).max(offset);
            let to = ((s + 1) * ls).min(offset + len);
            let p = present(s);
            match runs.last_mut() {
                Some(r) if r.2 == p && r.0 + r.1 == from => r.1 += to - from,
                _ => runs.push((from, to - from, p)),
            }
        }
        Ok(runs)
    }

    /// Read within one block.
    fn read_in_block(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        let e = self.entry(offset / self.block_size());
        let data = (e >> 20) * MIB + offset % self.block_size();
        match e & STATE_MASK {
            PAYLOAD_FULLY_PRESENT => self.read_file(buf, data),
            PAYLOAD_NOT_PRESENT if self.parent.is_some() => self.read_parent(buf, offset),
            PAYLOAD_PARTIALLY_PRESENT => {
                for (o, l, present) in self.sector_runs(offset, buf.len() as u64)? {
                    let piece = &mut buf[(o - offset) as usize..(o - offset + l) as usize];
                    if present {
                        self.read_file(piece, data + (o - offset))?;
                    } else {
                        self.read_parent(piece, o)?;
                    }
                }
                Ok(())
            }
            _ => {
                buf.fill(0);
                Ok(())
            }
        }
    }

    /// A zeroed block in the file: one freed earlier in this session, or a new one at
    /// the end.
    fn new_block(&mut self) -> Result<u64> {
        if let Some(off) = self.free_blocks.pop() {
            // The unmapping of this block must be durable before it holds other data.
            self.file.sync_data()?;
            self.file.zero_range(off, self.block_size())?;
            return Ok(off);
        }
        let off = self.next_block;
        if off / MIB >= 1 << 44 {
            return Err(self
                .file
                .corrupt("file offsets beyond what the BAT can address"));
        }
        self.next_block = off + self.block_size();
        if self.file.len()? < self.next_block {
            self.file.set_len(self.next_block)?;
        }
        Ok(off)
    }

    fn write_in_block(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        let block = offset / self.block_size();
        let e = self.entry(block);
        let in_block = offset % self.block_size();
        if e & STATE_MASK == PAYLOAD_FULLY_PRESENT {
            return self.file.write_all_at(buf, (e >> 20) * MIB + in_block);
        }
        let off = if self.parent.is_some() {
            // Differencing: the new block starts as what the block reads as now (parent
            // data, zeroes or partially present sectors), so it becomes fully present.
            let bs = self.block_size();
            let start = block * bs;
            let len = bs.min(self.size() - start);
            let off = self.new_block()?;
            // Copy in pieces so large blocks do not need one large buffer.
            let mut piece = vec![0u8; len.min(1 << 20) as usize];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(piece.len() as u64) as usize;
                self.read_in_block(&mut piece[..n], start + done)?;
                self.file.write_all_at(&piece[..n], off + done)?;
                done += n as u64;
            }
            self.file.write_all_at(buf, off + in_block)?;
            off
        } else {
            if buf.iter().all(|&b| b == 0) {
                return Ok(());
            }
            let off = self.new_block()?;
            self.file.write_all_at(buf, off + in_block)?;
            off
        };
        self.file.sync_data()?;
        self.set_entry(block, PAYLOAD_FULLY_PRESENT | (off / MIB) << 20)
    }

    fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        check_range(offset, len, self.size())?;
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.renew_write_guids()?;
        let bs = self.block_size();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = (bs - pos % bs).min(end - pos);
            let block = pos / bs;
            let e = self.entry(block);
            if n == bs && self.parent.is_some() {
                let old = e & STATE_MASK == PAYLOAD_FULLY_PRESENT;
                self.set_entry(block, PAYLOAD_ZERO)?;
                if old {
                    self.file.zero_range((e >> 20) * MIB, bs)?;
                    self.free_blocks.push((e >> 20) * MIB);
                }
            } else if self.parent.is_some() && e & STATE_MASK != PAYLOAD_FULLY_PRESENT {
                self.write_in_block(&vec![0u8; n as usize], pos)?;
            } else if e & STATE_MASK == PAYLOAD_FULLY_PRESENT {
                let data = (e >> 20) * MIB;
                if n == bs && !self.meta.leave_blocks_allocated {
                    self.set_entry(block, PAYLOAD_ZERO)?;
                    self.file.zero_range(data, bs)?;
                    self.free_blocks.push(data);
                } else {
                    self.file.zero_range(data + pos % bs, n)?;
                }
            }
            pos += n;
        }
        Ok(())
    }
}

impl DiskImage for VhdxImage {
    fn format(&self) -> Format {
        Format::Vhdx
    }

    fn size(&self) -> u64 {
        self.meta.disk_size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size())?;
        for (pos, piece) in block_pieces(offset, buf.len(), self.block_size()) {
            self.read_in_block(&mut buf[piece], pos)?;
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size())?;
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.renew_write_guids()?;
        for (pos, piece) in block_pieces(offset, buf.len(), self.block_size()) {
            self.write_in_block(&buf[piece], pos)?;
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
            match self.entry(pos / bs) & STATE_MASK {
                PAYLOAD_FULLY_PRESENT => push_extent(&mut map, pos, n, Allocation::Data),
                PAYLOAD_NOT_PRESENT if self.parent.is_some() => {
                    push_extent(&mut map, pos, n, Allocation::Backing)
                }
                PAYLOAD_PARTIALLY_PRESENT => {
                    for (o, l, present) in self.sector_runs(pos, n)? {
                        let state = if present {
                            Allocation::Data
                        } else {
                            Allocation::Backing
                        };
                        push_extent(&mut map, o, l, state);
                    }
                }
                _ => push_extent(&mut map, pos, n, Allocation::Zero),
            }
            pos += n;
        }
        Ok(map)
    }

    fn allocated_bytes(&self) -> Result<u64> {
        self.file.allocated_bytes()
    }

    fn backing(&self) -> Option<&dyn DiskImage> {
        self.parent.as_deref()
    }

    fn path(&self) -> &Path {
        self.file.path()
    }
}

#[cfg(test)]
mod tests;
