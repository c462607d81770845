//! VMDK images: monolithicSparse (read/write/create), monolithicFlat, twoGbMaxExtentSparse
//! and twoGbMaxExtentFlat (descriptor + extent files), streamOptimized (read; written whole
//! by [`write_stream_optimized`] for OVA export), and delta disks with a parent
//! (`parentFileNameHint`).

mod create;
mod descriptor;
mod sparse;
mod stream;

use std::path::{Path, PathBuf};

pub use create::create;
use descriptor::{Descriptor, ExtentKind};
use sparse::{Grain, SparseExtent, MAGIC, SECTOR};
pub use stream::write_stream_optimized;

use crate::image_file::{check_range, push_extent, random_uuid, ImageFile};
use crate::{Allocation, DiskImage, Error, Extent, Format, OpenOptions, Result};

/// Largest virtual disk accepted from a descriptor.
const MAX_DISK_SIZE: u64 = 1 << 50;

enum Storage {
    Sparse(Box<SparseExtent>),
    Flat { file: ImageFile, offset: u64 },
    Zero,
}

/// One extent placed in the virtual disk.
struct Piece {
    start: u64,
    len: u64,
    writable: bool,
    storage: Storage,
}

/// An open VMDK image.
pub struct VmdkImage {
    path: PathBuf,
    /// The descriptor file when it is separate from the extents.
    descriptor_file: Option<ImageFile>,
    pieces: Vec<Piece>,
    size: u64,
    parent: Option<Box<dyn DiskImage>>,
    read_only: bool,
    /// Whether the descriptor got a new CID for this session's first change.
    cid_renewed: bool,
}

/// Open a VMDK image (descriptor or monolithic sparse file) with its parent, if any.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
    Ok(Box::new(VmdkImage::open(
        path,
        opts.read_only,
        opts.allow_external_backing,
    )?))
}

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        format: Format::Vmdk,
        reason: reason.into(),
    }
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl VmdkImage {
    /// `allow_external` as in [`OpenOptions::allow_external_backing`], for extents and the
    /// parent.
    fn open(path: &Path, read_only: bool, allow_external: bool) -> Result<VmdkImage> {
        let probe = ImageFile::open(path, true, Format::Vmdk)?;
        let mut magic = [0u8; 4];
        probe.read_padded_at(&mut magic, 0)?;
        let (descriptor_file, pieces, desc) = if &magic == MAGIC {
            drop(probe);
            let extent = SparseExtent::open(path, read_only)?;
            let desc = match extent.embedded_descriptor()? {
                Some(text) => Some(
                    Descriptor::parse(&text)
                        .map_err(|e| corrupt(path, format!("embedded descriptor: {e}")))?,
                ),
                None => None,
            };
            let len = extent.size();
            let piece = Piece {
                start: 0,
                len,
                writable: true,
                storage: Storage::Sparse(Box::new(extent)),
            };
            (None, vec![piece], desc)
        } else {
            let len = probe.len()?;
            if len > descriptor::MAX_DESCRIPTOR as u64 {
                return Err(corrupt(
                    path,
                    "neither a sparse extent nor a descriptor file (too large)",
                ));
            }
            let mut text = vec![0u8; len as usize];
            probe.read_exact_at(&mut text, 0, "descriptor")?;
            let desc =
                Descriptor::parse(&text).map_err(|e| corrupt(path, format!("descriptor: {e}")))?;
            let pieces = Self::open_extents(path, &desc, read_only, allow_external)?;
            let file = ImageFile::open(path, read_only, Format::Vmdk)?;
            (Some(file), pieces, Some(desc))
        };
        let size = pieces.last().map_or(0, |p| p.start + p.len);
        let mut img = VmdkImage {
            path: path.to_path_buf(),
            descriptor_file,
            pieces,
            size,
            parent: None,
            read_only,
            cid_renewed: false,
        };
        if let Some(d) = desc.filter(|d| d.parent_cid != u32::MAX) {
            let hint = d
                .parent_hint
                .ok_or_else(|| corrupt(path, "delta disk without parentFileNameHint"))?;
            let parent_path =
                crate::resolve_reference(path, Path::new(&hint), "parent", allow_external)?;
            img.parent = Some(crate::open(
                &parent_path,
                &OpenOptions {
                    read_only: true,
                    format: None,
                    allow_external_backing: allow_external,
                },
            )?);
        }
        Ok(img)
    }

    fn open_extents(
        path: &Path,
        desc: &Descriptor,
        read_only: bool,
        allow_external: bool,
    ) -> Result<Vec<Piece>> {
        let mut pieces = Vec::with_capacity(desc.extents.len());
        let mut start = 0u64;
        for (i, e) in desc.extents.iter().enumerate() {
            let len = e
                .sectors
                .checked_mul(SECTOR)
                .filter(|&l| start.checked_add(l).is_some_and(|end| end <= MAX_DISK_SIZE))
                .ok_or_else(|| {
                    corrupt(
                        path,
                        format!("extent {i} makes the disk larger than {MAX_DISK_SIZE} bytes"),
                    )
                })?;
            let ro = read_only || !e.writable;
            // Extents live next to the descriptor (unless allowed otherwise) and are image
            // files: ImageFile::open refuses symbolic links, FIFOs and directories.
            let file_path = match e.kind {
                ExtentKind::Zero => PathBuf::new(),
                _ => crate::resolve_reference(path, Path::new(&e.file), "extent", allow_external)?,
            };
            let storage = match e.kind {
                ExtentKind::Zero => Storage::Zero,
                ExtentKind::Flat => {
                    let offset = e
                        .offset
                        .checked_mul(SECTOR)
                        .ok_or_else(|| corrupt(path, format!("extent {i} has a bad offset")))?;
                    Storage::Flat {
                        file: ImageFile::open(&file_path, ro, Format::Vmdk)?,
                        offset,
                    }
                }
                ExtentKind::Sparse => {
                    let s = SparseExtent::open(&file_path, ro)?;
                    if s.size() < len {
                        return Err(corrupt(path, format!(
                            "extent {i} ({}) holds {} bytes, less than the {len} the descriptor gives it",
                            e.file,
                            s.size()
                        )));
                    }
                    Storage::Sparse(Box::new(s))
                }
            };
            pieces.push(Piece {
                start,
                len,
                writable: e.writable,
                storage,
            });
            start += len;
        }
        Ok(pieces)
    }

    /// Index of the extent holding virtual offset `pos` (which is below the size).
    fn piece_at(&self, pos: u64) -> usize {
        self.pieces.partition_point(|p| p.start + p.len <= pos)
    }

    fn hole_state(&self) -> Allocation {
        if self.parent.is_some() {
            Allocation::Backing
        } else {
            Allocation::Zero
        }
    }

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

    /// Read within one grain of a sparse piece, or any span of a flat / zero piece.
    fn read_span(&mut self, idx: usize, buf: &mut [u8], pos: u64) -> Result<()> {
        let piece_start = self.pieces[idx].start;
        let rel = pos - piece_start;
        let grain = match &mut self.pieces[idx].storage {
            Storage::Zero => {
                buf.fill(0);
                return Ok(());
            }
            Storage::Flat { file, offset } => return file.read_padded_at(buf, *offset + rel),
            Storage::Sparse(s) => {
                let gb = s.grain_bytes();
                match s.lookup(rel / gb)? {
                    Grain::Data(off) => return s.file.read_padded_at(buf, off + rel % gb),
                    Grain::Zero => {
                        buf.fill(0);
                        return Ok(());
                    }
                    Grain::Compressed(off) => {
                        let mut g = vec![0u8; gb as usize];
                        s.read_compressed(off, &mut g)?;
                        let from = (rel % gb) as usize;
                        buf.copy_from_slice(&g[from..from + buf.len()]);
                        return Ok(());
                    }
                    Grain::Unallocated => rel / gb,
                }
            }
        };
        let _ = grain;
        self.read_hole(buf, pos)
    }

    /// Largest span from `pos` (below `end`) that stays in one extent and one grain.
    fn span(&self, idx: usize, pos: u64, end: u64) -> u64 {
        let p = &self.pieces[idx];
        let mut n = (p.start + p.len).min(end) - pos;
        if let Storage::Sparse(s) = &p.storage {
            let gb = s.grain_bytes();
            n = n.min(gb - (pos - p.start) % gb);
        }
        n
    }

    fn write_span(&mut self, idx: usize, buf: &[u8], pos: u64) -> Result<()> {
        if !self.pieces[idx].writable {
            return Err(Error::ReadOnly);
        }
        let piece_start = self.pieces[idx].start;
        let rel = pos - piece_start;
        let has_parent = self.parent.is_some();
        let (gb, grain, state) = match &mut self.pieces[idx].storage {
            Storage::Zero => return Err(Error::ReadOnly),
            Storage::Flat { file, offset } => return file.write_all_at(buf, *offset + rel),
            Storage::Sparse(s) => {
                let gb = s.grain_bytes();
                (gb, rel / gb, s.lookup(rel / gb)?)
            }
        };
        let in_grain = rel % gb;
        if let Grain::Data(off) = state {
            if let Storage::Sparse(s) = &mut self.pieces[idx].storage {
                return s.file.write_all_at(buf, off + in_grain);
            }
        }
        if state == Grain::Unallocated && !has_parent && buf.iter().all(|&b| b == 0) {
            return Ok(());
        }
        // New grain: complete it with what the grain reads as now (parent data or zeroes).
        let whole = buf.len() as u64 == gb;
        let mut data = None;
        if !whole && state == Grain::Unallocated && has_parent {
            let mut g = vec![0u8; gb as usize];
            let grain_start = pos - in_grain;
            let n = g.len().min((self.size - grain_start) as usize);
            self.read_hole(&mut g[..n], grain_start)?;
            g[in_grain as usize..in_grain as usize + buf.len()].copy_from_slice(buf);
            data = Some(g);
        }
        if let Storage::Sparse(s) = &mut self.pieces[idx].storage {
            match data {
                Some(g) => {
                    s.allocate_grain(grain, Some(&g), true)?;
                }
                None if whole => {
                    s.allocate_grain(grain, Some(buf), has_parent)?;
                }
                None => {
                    // Fresh space reads as zeroes: write only the new bytes, then map it.
                    let off = s.allocate_grain(grain, None, false)?;
                    s.file.write_all_at(buf, off + in_grain)?;
                }
            }
        }
        Ok(())
    }

    /// Before the first change: a new CID in the descriptor (as VMware and qemu do), so
    /// delta disks made from this image can tell it changed since.
    fn renew_cid(&mut self) -> Result<()> {
        if self.cid_renewed {
            return Ok(());
        }
        self.cid_renewed = true;
        let uuid = random_uuid();
        let cid = u32::from_le_bytes([uuid[0], uuid[1], uuid[2], uuid[3]]);
        if let Some(f) = &self.descriptor_file {
            let len = f.len()?.min(descriptor::MAX_DESCRIPTOR as u64);
            let mut text = vec![0u8; len as usize];
            f.read_exact_at(&mut text, 0, "descriptor")?;
            if let Some(new) = descriptor::replace_cid(&text, cid) {
                f.write_all_at(&new, 0)?;
                f.set_len(new.len() as u64)?;
            }
        } else if let Some(Storage::Sparse(s)) = self.pieces.first().map(|p| &p.storage) {
            if let Some(text) = s.embedded_descriptor()? {
                match descriptor::replace_cid(&text, cid) {
                    Some(new) if new.len() <= text.len() => {
                        s.file.write_all_at(&new, s.header.desc_offset * SECTOR)?
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        check_range(offset, len, self.size)?;
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.renew_cid()?;
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let idx = self.piece_at(pos);
            let n = self.span(idx, pos, end);
            let rel = pos - self.pieces[idx].start;
            let has_parent = self.parent.is_some();
            if !self.pieces[idx].writable {
                return Err(Error::ReadOnly);
            }
            let done = match &mut self.pieces[idx].storage {
                Storage::Zero => true,
                Storage::Flat { file, offset } => {
                    file.zero_range(*offset + rel, n)?;
                    true
                }
                Storage::Sparse(s) => {
                    let gb = s.grain_bytes();
                    match s.lookup(rel / gb)? {
                        Grain::Zero => true,
                        Grain::Unallocated if !has_parent => true,
                        Grain::Data(off) if n < gb => {
                            s.file.zero_range(off + rel % gb, n)?;
                            true
                        }
                        _ if n == gb => {
                            s.unmap_grain(rel / gb, false)?
                                || (!has_parent && s.unmap_grain(rel / gb, true)?)
                        }
                        _ => false,
                    }
                }
            };
            if !done {
                self.write_span(idx, &vec![0u8; n as usize], pos)?;
            }
            pos += n;
        }
        Ok(())
    }
}

impl DiskImage for VmdkImage {
    fn format(&self) -> Format {
        Format::Vmdk
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let idx = self.piece_at(pos);
            let n = self.span(idx, pos, end);
            let from = (pos - offset) as usize;
            self.read_span(idx, &mut buf[from..from + n as usize], pos)?;
            pos += n;
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.renew_cid()?;
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let idx = self.piece_at(pos);
            let n = self.span(idx, pos, end);
            let from = (pos - offset) as usize;
            self.write_span(idx, &buf[from..from + n as usize], pos)?;
            pos += n;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        for p in self.pieces.iter().filter(|p| p.writable) {
            match &p.storage {
                Storage::Sparse(s) => s.file.sync_data()?,
                Storage::Flat { file, .. } => file.sync_data()?,
                Storage::Zero => {}
            }
        }
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.zero(offset, len)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()> {
        self.zero(offset, len)
    }

    fn allocation(&mut self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(offset, len, self.size)?;
        let hole = self.hole_state();
        let end = offset + len;
        let mut map = Vec::new();
        let mut pos = offset;
        while pos < end {
            let idx = self.piece_at(pos);
            let n = self.span(idx, pos, end);
            let rel = pos - self.pieces[idx].start;
            let state = match &mut self.pieces[idx].storage {
                Storage::Zero => Allocation::Zero,
                Storage::Flat { .. } => Allocation::Data,
                Storage::Sparse(s) => match s.lookup(rel / s.grain_bytes())? {
                    Grain::Unallocated => hole,
                    Grain::Zero => Allocation::Zero,
                    Grain::Data(_) | Grain::Compressed(_) => Allocation::Data,
                },
            };
            push_extent(&mut map, pos, n, state);
            pos += n;
        }
        Ok(map)
    }

    fn allocated_bytes(&self) -> Result<u64> {
        let mut total = match &self.descriptor_file {
            Some(f) => f.allocated_bytes()?,
            None => 0,
        };
        for p in &self.pieces {
            total += match &p.storage {
                Storage::Sparse(s) => s.file.allocated_bytes()?,
                Storage::Flat { file, .. } => file.allocated_bytes()?,
                Storage::Zero => 0,
            };
        }
        Ok(total)
    }

    fn backing(&self) -> Option<&dyn DiskImage> {
        self.parent.as_deref()
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut out = vec![self.path.clone()];
        for piece in &self.pieces {
            let file = match &piece.storage {
                Storage::Sparse(s) => s.file.path(),
                Storage::Flat { file, .. } => file.path(),
                Storage::Zero => continue,
            };
            if !out.iter().any(|p| p == file) {
                out.push(file.to_path_buf());
            }
        }
        if let Some(parent) = &self.parent {
            out.extend(parent.files());
        }
        out
    }
}

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
