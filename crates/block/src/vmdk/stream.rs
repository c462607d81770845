//! Writing streamOptimized VMDKs (VMware Virtual Disk Format 5.0, "Stream-Optimized
//! Compressed Sparse Extents"): the format of OVA appliances.
//!
//! The file is written strictly front to back: a header whose grain directory offset is
//! `GD_AT_END`, the embedded descriptor, then for every grain table its non-zero grains
//! (each behind a grain marker, zlib-deflated and padded to a sector), the grain table
//! behind a table marker, then the grain directory behind its marker, the footer (a
//! second header with the real directory offset) behind the footer marker, and the
//! end-of-stream marker. Grains that read as zeroes are left out.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::descriptor::{Descriptor, ExtentKind, ExtentLine};
use super::sparse::{MAGIC, SECTOR};
use crate::image_file::random_uuid;
use crate::{Allocation, DiskImage, Error, Result};

/// 64 KiB grains, as VMware and VirtualBox write them.
const GRAIN_SECTORS: u64 = 128;
const GRAIN_BYTES: u64 = GRAIN_SECTORS * SECTOR;
/// Entries per grain table (the spec's fixed value).
const GTES_PER_GT: u64 = 512;
const FLAG_NL_DETECT: u32 = 1;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;
const COMPRESS_DEFLATE: u16 = 1;
/// Sparse extents address sectors with 32-bit grain entries.
const MAX_CAPACITY_SECTORS: u64 = 1 << 32;

/// Sequential writer that tracks the output position in sectors.
struct Out {
    w: BufWriter<File>,
    path: std::path::PathBuf,
    sector: u64,
}

impl Out {
    /// Write `data` padded with zeroes to a whole number of sectors.
    fn put(&mut self, data: &[u8]) -> Result<()> {
        let pad = (SECTOR - data.len() as u64 % SECTOR) % SECTOR;
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        self.w.write_all(data).map_err(io)?;
        self.w
            .write_all(&vec![0u8; pad as usize])
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })?;
        self.sector += (data.len() as u64 + pad) / SECTOR;
        Ok(())
    }

    /// A metadata marker (`val` sectors of `kind` follow).
    fn marker(&mut self, val: u64, kind: u32) -> Result<()> {
        let mut m = [0u8; 512];
        m[..8].copy_from_slice(&val.to_le_bytes());
        m[12..16].copy_from_slice(&kind.to_le_bytes());
        self.put(&m)
    }
}

/// The 512-byte sparse header of a stream-optimized extent.
fn header(capacity: u64, desc_sectors: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..4].copy_from_slice(MAGIC);
    h[4..8].copy_from_slice(&3u32.to_le_bytes());
    let flags = FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS;
    h[8..12].copy_from_slice(&flags.to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&1u64.to_le_bytes());
    h[36..44].copy_from_slice(&desc_sectors.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    // rgdOffset 48..56 stays 0: stream-optimized extents have no redundant directory.
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    let overhead = (1 + desc_sectors).next_multiple_of(GRAIN_SECTORS);
    h[64..72].copy_from_slice(&overhead.to_le_bytes());
    h[73] = b'\n';
    h[74] = b' ';
    h[75] = b'\r';
    h[76] = b'\n';
    h[77..79].copy_from_slice(&COMPRESS_DEFLATE.to_le_bytes());
    h
}

/// Whether the `len` bytes at `offset` of `src` certainly read as zeroes.
fn reads_as_zero(src: &mut dyn DiskImage, offset: u64, len: u64) -> Result<bool> {
    Ok(src
        .allocation(offset, len)?
        .iter()
        .all(|e| e.state == Allocation::Zero))
}

/// Write the whole virtual disk `src` as a new streamOptimized VMDK at `dest` (which must
/// not exist). `dest`'s file name goes into the embedded descriptor. Returns the bytes
/// written.
pub fn write_stream_optimized(src: &mut dyn DiskImage, dest: &Path) -> Result<u64> {
    let size = src.size();
    let capacity = size.div_ceil(SECTOR);
    if capacity > MAX_CAPACITY_SECTORS {
        return Err(Error::InvalidArgument(format!(
            "a stream-optimized VMDK holds at most 2 TiB; the disk has {size} bytes"
        )));
    }
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.contains('"'))
        .ok_or_else(|| {
            Error::InvalidArgument("VMDK file name must be UTF-8 without quotes".into())
        })?;
    let uuid = random_uuid();
    let desc = Descriptor {
        create_type: "streamOptimized".into(),
        cid: u32::from_le_bytes([uuid[0], uuid[1], uuid[2], uuid[3]]),
        parent_cid: u32::MAX,
        parent_hint: None,
        extents: vec![ExtentLine {
            writable: true,
            sectors: capacity,
            kind: ExtentKind::Sparse,
            file: name.to_string(),
            offset: 0,
        }],
    };
    let text = desc.render(capacity);
    let desc_sectors = (text.len() as u64).div_ceil(SECTOR);
    let file = File::create_new(dest).map_err(|source| Error::Io {
        path: dest.to_path_buf(),
        source,
    })?;
    let mut out = Out {
        w: BufWriter::with_capacity(1 << 20, file),
        path: dest.to_path_buf(),
        sector: 0,
    };
    out.put(&header(capacity, desc_sectors, u64::MAX))?;
    out.put(text.as_bytes())?;
    let overhead = (1 + desc_sectors).next_multiple_of(GRAIN_SECTORS);
    out.put(&vec![0u8; ((overhead - out.sector) * SECTOR) as usize])?;
    let gd = write_grains(src, &mut out, capacity)?;
    let gd_bytes: Vec<u8> = gd.iter().flat_map(|e| e.to_le_bytes()).collect();
    let gd_sectors = (gd_bytes.len() as u64).div_ceil(SECTOR);
    out.marker(gd_sectors, MARKER_GD)?;
    let gd_offset = out.sector;
    out.put(&gd_bytes)?;
    out.marker(1, MARKER_FOOTER)?;
    out.put(&header(capacity, desc_sectors, gd_offset))?;
    out.marker(0, MARKER_EOS)?;
    out.w.flush().map_err(|source| Error::Io {
        path: dest.to_path_buf(),
        source,
    })?;
    Ok(out.sector * SECTOR)
}

/// Write every non-zero grain and the grain tables; returns the grain directory.
fn write_grains(src: &mut dyn DiskImage, out: &mut Out, capacity: u64) -> Result<Vec<u32>> {
    let size = src.size();
    let gt_span = GTES_PER_GT * GRAIN_BYTES;
    let tables = (capacity * SECTOR).div_ceil(gt_span);
    let mut gd = Vec::with_capacity(tables as usize);
    let mut grain = vec![0u8; GRAIN_BYTES as usize];
    for t in 0..tables {
        let start = t * gt_span;
        let end = (start + gt_span).min(size);
        let mut gt = vec![0u32; GTES_PER_GT as usize];
        let mut any = false;
        if end > start && !reads_as_zero(src, start, end - start)? {
            for (i, entry) in gt.iter_mut().enumerate() {
                let off = start + i as u64 * GRAIN_BYTES;
                if off >= end {
                    break;
                }
                let len = GRAIN_BYTES.min(size - off) as usize;
                grain.fill(0);
                src.read_at(&mut grain[..len], off)?;
                if grain.iter().all(|&b| b == 0) {
                    continue;
                }
                let packed = miniz_oxide::deflate::compress_to_vec_zlib(&grain[..len], 6);
                *entry = sector_u32(out.sector)?;
                let mut rec = Vec::with_capacity(12 + packed.len());
                rec.extend_from_slice(&(off / SECTOR).to_le_bytes());
                rec.extend_from_slice(&(packed.len() as u32).to_le_bytes());
                rec.extend_from_slice(&packed);
                out.put(&rec)?;
                any = true;
            }
        }
        if !any {
            gd.push(0);
            continue;
        }
        out.marker(GTES_PER_GT * 4 / SECTOR, MARKER_GT)?;
        gd.push(sector_u32(out.sector)?);
        let bytes: Vec<u8> = gt.iter().flat_map(|e| e.to_le_bytes()).collect();
        out.put(&bytes)?;
    }
    Ok(gd)
}

fn sector_u32(sector: u64) -> Result<u32> {
    u32::try_from(sector).map_err(|_| {
        Error::InvalidArgument("stream-optimized VMDK would pass 2 TiB of compressed data".into())
    })
}
