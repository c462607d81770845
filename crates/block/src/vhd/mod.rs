//! VHD images (qemu-img's `vpc`): fixed, dynamic and differencing.
//!
//! A fixed disk is the raw data followed by a 512-byte footer. Dynamic and differencing
//! disks are: footer copy, dynamic header, block allocation table (BAT, big-endian sector
//! offsets), then blocks (a sector bitmap followed by the block data), and the footer at
//! the end, rewritten past each newly appended block. The sector bitmap says which sectors
//! hold data; clear sectors read as zeroes (dynamic) or from the parent (differencing).

mod create;
mod footer;
mod parent;

use std::path::{Path, PathBuf};

pub use create::create;
use footer::{
    DynHeader, Footer, BAT_FREE, DYN_HEADER_SIZE, FOOTER_SIZE, SECTOR, TYPE_DIFFERENCING,
    TYPE_FIXED,
};

use crate::image_file::{
    be_u32, be_u64, block_pieces, check_range, push_extent, ImageFile, MAX_TABLE_BYTES,
};
use crate::{Allocation, DiskImage, Error, Extent, Format, OpenOptions, Result};

/// Metadata of a dynamic or differencing disk.
struct Sparse {
    header: DynHeader,
    bat: Vec<u32>,
    /// File offset where the next block goes (the footer copy sits there).
    next_block: u64,
}

/// An open VHD image.
pub struct VhdImage {
    file: ImageFile,
    footer: Footer,
    sparse: Option<Sparse>,
    parent: Option<Box<dyn DiskImage>>,
    read_only: bool,
    /// [`OpenOptions::allow_external_backing`], for the parent locators.
    allow_external: bool,
}

/// Open a VHD image (and the parent chain of a differencing disk).
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
    Ok(Box::new(VhdImage::open(
        path,
        opts.read_only,
        opts.allow_external_backing,
    )?))
}

/// Read the footer at the end of `file`, falling back to the copy at offset 0 of a
/// dynamic disk. Returns the footer and whether the copy at the end was valid.
fn read_footer(file: &ImageFile) -> Result<(Footer, bool)> {
    let len = file.len()?;
    if len < FOOTER_SIZE as u64 {
        return Err(file.corrupt(format!("file of {len} bytes is shorter than a VHD footer")));
    }
    let mut raw = [0u8; FOOTER_SIZE];
    file.read_exact_at(&mut raw, len - FOOTER_SIZE as u64, "footer")?;
    let end = Footer::parse(file, raw);
    if let Ok(f) = end {
        return Ok((f, true));
    }
    file.read_exact_at(&mut raw, 0, "footer copy")?;
    match Footer::parse(file, raw) {
        Ok(f) if f.disk_type != TYPE_FIXED => Ok((f, false)),
        _ => end.map(|f| (f, true)),
    }
}

/// Bytes from `path`'s footer that identify a parent: (unique id, timestamp, size).
pub(crate) fn identity(path: &Path) -> Result<([u8; 16], u32, u64)> {
    let file = ImageFile::open(path, true, Format::Vhd)?;
    let (f, _) = read_footer(&file)?;
    Ok((f.unique_id, f.timestamp, f.virtual_size))
}

impl VhdImage {
    fn open(path: &Path, read_only: bool, allow_external: bool) -> Result<VhdImage> {
        let file = ImageFile::open(path, read_only, Format::Vhd)?;
        let (footer, end_valid) = read_footer(&file)?;
        let file_len = file.len()?;
        let mut img = VhdImage {
            file,
            footer,
            sparse: None,
            parent: None,
            read_only,
            allow_external,
        };
        if img.footer.disk_type == TYPE_FIXED {
            if img.footer.virtual_size > file_len - FOOTER_SIZE as u64 {
                return Err(img.file.corrupt(format!(
                    "fixed disk of {} bytes does not fit in a file of {file_len} bytes",
                    img.footer.virtual_size
                )));
            }
            return Ok(img);
        }
        img.sparse = Some(img.read_sparse(file_len, end_valid)?);
        if img.footer.disk_type == TYPE_DIFFERENCING {
            img.parent = Some(img.open_parent()?);
        }
        Ok(img)
    }

    fn read_sparse(&self, file_len: u64, end_valid: bool) -> Result<Sparse> {
        let file = &self.file;
        let dyn_off = self.footer.data_offset;
        if dyn_off < FOOTER_SIZE as u64
            || dyn_off
                .checked_add(DYN_HEADER_SIZE as u64)
                .is_none_or(|e| e > file_len)
        {
            return Err(file.corrupt(format!(
                "dynamic header offset {dyn_off:#x} is outside the file"
            )));
        }
        let mut raw = [0u8; DYN_HEADER_SIZE];
        file.read_exact_at(&mut raw, dyn_off, "dynamic header")?;
        let header = DynHeader::parse(file, raw)?;
        let bs = u64::from(header.block_size);
        let needed = self.footer.virtual_size.div_ceil(bs);
        let entries = u64::from(header.max_table_entries);
        if entries < needed {
            return Err(file.corrupt(format!(
                "BAT of {entries} entries cannot map {} bytes in blocks of {bs}",
                self.footer.virtual_size
            )));
        }
        let bat_off = header.table_offset;
        // Only the entries that map the disk are read; a table may be longer.
        let bat_bytes = needed * 4;
        if bat_bytes > MAX_TABLE_BYTES {
            return Err(file.corrupt(format!("BAT of {needed} entries is too large")));
        }
        if bat_off < FOOTER_SIZE as u64
            || bat_off.checked_add(bat_bytes).is_none_or(|e| e > file_len)
        {
            return Err(file.corrupt(format!(
                "BAT at {bat_off:#x} ({bat_bytes} bytes) is outside the file"
            )));
        }
        crate::budget::charge(file.path(), "BAT", bat_bytes)?;
        let mut raw_bat = vec![0u8; bat_bytes as usize];
        file.read_exact_at(&mut raw_bat, bat_off, "BAT")?;
        let bat: Vec<u32> = raw_bat.chunks_exact(4).map(|c| be_u32(c, 0)).collect();
        let stride = header.bitmap_size() + bs;
        let table_end = bat_off + entries * 4;
        let mut meta_end = (dyn_off + DYN_HEADER_SIZE as u64).max(table_end);
        for i in 0..8 {
            let e = &header.raw[576 + i * 24..576 + (i + 1) * 24];
            if be_u32(e, 0) != 0 {
                let end = be_u64(e, 16)
                    .saturating_add(u64::from(be_u32(e, 4)).max(u64::from(be_u32(e, 8))));
                if end <= file_len {
                    meta_end = meta_end.max(end);
                }
            }
        }
        let mut starts: Vec<(u64, usize)> = Vec::new();
        for (i, &e) in bat.iter().enumerate() {
            if e == BAT_FREE {
                continue;
            }
            let start = u64::from(e) * SECTOR;
            let overlaps = |a: u64, b: u64| start < b && a < start + stride;
            if start >= file_len
                || overlaps(dyn_off, dyn_off + DYN_HEADER_SIZE as u64)
                || overlaps(bat_off, table_end)
                || start < FOOTER_SIZE as u64
            {
                return Err(file.corrupt(format!(
                    "block {i} at {start:#x} overlaps metadata or is past the end of the file"
                )));
            }
            starts.push((start, i));
        }
        starts.sort_unstable();
        for w in starts.windows(2) {
            if w[0].0 + stride > w[1].0 {
                return Err(file.corrupt(format!("blocks {} and {} overlap", w[0].1, w[1].1)));
            }
        }
        let blocks_end = starts.last().map_or(0, |&(s, _)| s + stride);
        let mut next_block = meta_end.max(blocks_end).div_ceil(SECTOR) * SECTOR;
        if end_valid {
            next_block = next_block.max(file_len - FOOTER_SIZE as u64);
        }
        Ok(Sparse {
            header,
            bat,
            next_block,
        })
    }

    fn open_parent(&self) -> Result<Box<dyn DiskImage>> {
        let sparse = self.sparse.as_ref().ok_or_else(|| {
            self.file
                .corrupt("differencing disk without a dynamic header")
        })?;
        let names = parent::parent_candidates(&self.file, &sparse.header.raw)?;
        let path =
            crate::reference::pick_parent(self.file.path(), &names, "VHD", self.allow_external)?;
        let path = path.as_path();
        if let Ok((uid, _, _)) = identity(path) {
            if uid != sparse.header.parent_unique_id {
                return Err(self.file.corrupt(format!(
                    "parent {} has a different unique id than the one recorded",
                    path.display()
                )));
            }
        }
        crate::open(
            path,
            &OpenOptions {
                read_only: true,
                format: None,
                allow_external_backing: self.allow_external,
            },
        )
    }

    fn block_size(&self) -> u64 {
        self.sparse
            .as_ref()
            .map_or(0, |s| u64::from(s.header.block_size))
    }

    /// Where reads of unallocated data go.
    fn hole_state(&self) -> Allocation {
        if self.parent.is_some() {
            Allocation::Backing
        } else {
            Allocation::Zero
        }
    }

    /// Fill `buf` from the parent (zeroes past its end), or with zeroes without one.
    fn read_hole(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
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

    fn read_bitmap(&self, block_start: u64) -> Result<Vec<u8>> {
        let size = self.sparse.as_ref().map_or(0, |s| s.header.bitmap_size());
        let mut bm = vec![0u8; size as usize];
        self.file.read_padded_at(&mut bm, block_start)?;
        Ok(bm)
    }

    /// Runs of sectors `[first, last]` of a block with the same bitmap bit: (sector, count, set).
    fn runs(bitmap: &[u8], first: u64, last: u64) -> Vec<(u64, u64, bool)> {
        let bit = |s: u64| bitmap[(s / 8) as usize] & (0x80 >> (s % 8)) != 0;
        let mut out: Vec<(u64, u64, bool)> = Vec::new();
        let mut s = first;
        while s <= last {
            let set = bit(s);
            let start = s;
            while s <= last && bit(s) == set {
                s += 1;
            }
            out.push((start, s - start, set));
        }
        out
    }

    /// Read a span that lies within one block.
    fn read_in_block(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        let bs = self.block_size();
        let entry = self
            .sparse
            .as_ref()
            .map_or(BAT_FREE, |s| s.bat[(offset / bs) as usize]);
        if entry == BAT_FREE {
            return self.read_hole(buf, offset);
        }
        let block_start = u64::from(entry) * SECTOR;
        let data = block_start + self.sparse.as_ref().map_or(0, |s| s.header.bitmap_size());
        let block_off = offset / bs * bs;
        let bitmap = self.read_bitmap(block_start)?;
        let in_block = offset - block_off;
        let end = in_block + buf.len() as u64;
        for (sector, count, set) in Self::runs(&bitmap, in_block / SECTOR, (end - 1) / SECTOR) {
            let from = (sector * SECTOR).max(in_block);
            let to = ((sector + count) * SECTOR).min(end);
            let piece = &mut buf[(from - in_block) as usize..(to - in_block) as usize];
            if set {
                self.file.read_padded_at(piece, data + from)?;
            } else {
                self.read_hole(piece, block_off + from)?;
            }
        }
        Ok(())
    }

    /// Append a block for `block`: footer first (the file never lacks one), then bitmap,
    /// then the BAT entry. Returns the block's file offset.
    fn allocate(&mut self, block: u64) -> Result<u64> {
        let differencing = self.parent.is_some();
        let sparse = self
            .sparse
            .as_mut()
            .ok_or_else(|| self.file.corrupt("not a dynamic disk"))?;
        let start = sparse.next_block;
        let bitmap_size = sparse.header.bitmap_size();
        let end = start + bitmap_size + u64::from(sparse.header.block_size);
        let sector = u32::try_from(start / SECTOR)
            .ok()
            .filter(|&s| s != BAT_FREE)
            .ok_or_else(|| {
                self.file
                    .corrupt("file has grown past the 2 TiB the BAT can address")
            })?;
        let old_len = self.file.len()?;
        self.file.write_all_at(&self.footer.raw, end)?;
        let data = start + bitmap_size;
        if old_len > data {
            self.file.zero_range(data, old_len.min(end) - data)?;
        }
        // Dynamic disks mark every sector present (as qemu does); differencing disks mark
        // sectors as they are written.
        let fill = if differencing { 0 } else { 0xff };
        self.file
            .write_all_at(&vec![fill; bitmap_size as usize], start)?;
        sparse.bat[block as usize] = sector;
        let bat_pos = sparse.header.table_offset + block * 4;
        self.file.write_all_at(&sector.to_be_bytes(), bat_pos)?;
        sparse.next_block = end;
        Ok(start)
    }

    /// Write a span that lies within one block.
    fn write_in_block(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        let bs = self.block_size();
        let block = offset / bs;
        let differencing = self.parent.is_some();
        let mut entry = self
            .sparse
            .as_ref()
            .map_or(BAT_FREE, |s| s.bat[block as usize]);
        if entry == BAT_FREE {
            if !differencing && buf.iter().all(|&b| b == 0) {
                return Ok(());
            }
            entry = (self.allocate(block)? / SECTOR) as u32;
        }
        let block_start = u64::from(entry) * SECTOR;
        let data = block_start + self.sparse.as_ref().map_or(0, |s| s.header.bitmap_size());
        let in_block = offset % bs;
        if !differencing {
            return self.file.write_all_at(buf, data + in_block);
        }
        // Differencing: write whole sectors, completing partial ones with current data,
        // then mark them present.
        let first = in_block / SECTOR;
        let last = (in_block + buf.len() as u64 - 1) / SECTOR;
        let mut aligned = vec![0u8; ((last - first + 1) * SECTOR) as usize];
        let head = (in_block - first * SECTOR) as usize;
        let block_off = block * bs;
        if head != 0 {
            self.read_in_block(&mut aligned[..SECTOR as usize], block_off + first * SECTOR)?;
        }
        let tail_start = aligned.len() - SECTOR as usize;
        if !(head + buf.len()).is_multiple_of(SECTOR as usize) {
            let mut sector = [0u8; SECTOR as usize];
            self.read_in_block(&mut sector, block_off + last * SECTOR)?;
            aligned[tail_start..].copy_from_slice(&sector);
        }
        aligned[head..head + buf.len()].copy_from_slice(buf);
        self.file.write_all_at(&aligned, data + first * SECTOR)?;
        let mut bitmap = self.read_bitmap(block_start)?;
        if bitmap.iter().any(|&b| b != 0xff) {
            // The sectors must hold their data before the bitmap stops showing the parent.
            self.file.sync_data()?;
        }
        let before = bitmap.clone();
        for s in first..=last {
            bitmap[(s / 8) as usize] |= 0x80 >> (s % 8);
        }
        if bitmap != before {
            self.file.write_all_at(&bitmap, block_start)?;
        }
        Ok(())
    }

    /// Zero `[offset, offset + len)`: unmap whole blocks of dynamic disks, punch data
    /// elsewhere; differencing disks store explicit zeroes so the parent stays hidden.
    fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        check_range(offset, len, self.size())?;
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if self.sparse.is_none() {
            return self.file.zero_range(offset, len);
        }
        let bs = self.block_size();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = (bs - pos % bs).min(end - pos);
            let block = pos / bs;
            if self.parent.is_some() {
                let zeroes = vec![0u8; n.min(1 << 20) as usize];
                let mut done = 0;
                while done < n {
                    let k = (n - done).min(zeroes.len() as u64);
                    self.write_in_block(&zeroes[..k as usize], pos + done)?;
                    done += k;
                }
            } else if let Some(sparse) = self.sparse.as_mut() {
                let entry = sparse.bat[block as usize];
                if entry != BAT_FREE {
                    let block_start = u64::from(entry) * SECTOR;
                    let bitmap_size = sparse.header.bitmap_size();
                    if n == bs {
                        sparse.bat[block as usize] = BAT_FREE;
                        let bat_pos = sparse.header.table_offset + block * 4;
                        self.file.write_all_at(&BAT_FREE.to_be_bytes(), bat_pos)?;
                        self.file.zero_range(block_start, bitmap_size + bs)?;
                    } else {
                        self.file
                            .zero_range(block_start + bitmap_size + pos % bs, n)?;
                    }
                }
            }
            pos += n;
        }
        Ok(())
    }
}

impl DiskImage for VhdImage {
    fn format(&self) -> Format {
        Format::Vhd
    }

    fn size(&self) -> u64 {
        self.footer.virtual_size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size())?;
        if self.sparse.is_none() {
            return self.file.read_padded_at(buf, offset);
        }
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
        if self.sparse.is_none() {
            return self.file.write_all_at(buf, offset);
        }
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
        let mut map = Vec::new();
        if self.sparse.is_none() {
            push_extent(&mut map, offset, len, Allocation::Data);
            return Ok(map);
        }
        let hole = self.hole_state();
        let bs = self.block_size();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = (bs - pos % bs).min(end - pos);
            let entry = self
                .sparse
                .as_ref()
                .map_or(BAT_FREE, |s| s.bat[(pos / bs) as usize]);
            if entry == BAT_FREE {
                push_extent(&mut map, pos, n, hole);
            } else {
                let bitmap = self.read_bitmap(u64::from(entry) * SECTOR)?;
                let in_block = pos % bs;
                let block_off = pos - in_block;
                let stop = in_block + n;
                for (sector, count, set) in
                    Self::runs(&bitmap, in_block / SECTOR, (stop - 1) / SECTOR)
                {
                    let from = (sector * SECTOR).max(in_block);
                    let to = ((sector + count) * SECTOR).min(stop);
                    let state = if set { Allocation::Data } else { hole };
                    push_extent(&mut map, block_off + from, to - from, state);
                }
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

/// Resolve a parent path given at creation: relative paths are relative to the child.
fn resolve_parent(child: &Path, parent: &Path) -> PathBuf {
    if parent.is_absolute() {
        parent.to_path_buf()
    } else {
        parent::dir_of(child).join(parent)
    }
}

#[cfg(test)]
mod tests;
