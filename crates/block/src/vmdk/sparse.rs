//! Hosted sparse extents ("KDMV"): header, grain directory (plus the redundant copy),
//! grain tables, plain and compressed (streamOptimized) grains.

use std::collections::HashMap;
use std::path::Path;

use crate::image_file::{le_u16, le_u32, le_u64, ImageFile, MAX_TABLE_BYTES};
use crate::{Format, Result};

pub(crate) const MAGIC: &[u8; 4] = b"KDMV";
pub(crate) const SECTOR: u64 = 512;
const FLAG_NL_DETECT: u32 = 1;
pub(crate) const FLAG_RGD: u32 = 1 << 1;
const FLAG_ZERO_GRAIN: u32 = 1 << 2;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
/// `gd_offset` of stream-optimized images: the real header is in the footer.
const GD_AT_END: u64 = u64::MAX;
const COMPRESS_DEFLATE: u16 = 1;
/// Grain table entry of a zeroed grain (with FLAG_ZERO_GRAIN).
const GTE_ZERO: u32 = 1;
const MARKER_FOOTER: u32 = 3;
/// Largest capacity: GTEs are 32-bit sector numbers, so a sparse extent file holds 2 TiB.
const MAX_CAPACITY_SECTORS: u64 = 1 << 32;

/// What a grain table entry says about one grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grain {
    Unallocated,
    Zero,
    /// Plain grain at this file offset.
    Data(u64),
    /// Compressed grain (with or without a marker) at this file offset.
    Compressed(u64),
}

/// The header fields of a sparse extent.
#[derive(Debug, Clone)]
pub(crate) struct SparseHeader {
    pub flags: u32,
    pub capacity: u64,
    pub grain_sectors: u64,
    pub desc_offset: u64,
    pub desc_size: u64,
    pub gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
}

impl SparseHeader {
    fn parse(file: &ImageFile, raw: &[u8; 512]) -> Result<SparseHeader> {
        if &raw[..4] != MAGIC {
            return Err(file.corrupt("no sparse extent magic \"KDMV\""));
        }
        let version = le_u32(raw, 4);
        if !(1..=3).contains(&version) {
            return Err(file.unsupported(format!("sparse extent version {version}")));
        }
        let h = SparseHeader {
            flags: le_u32(raw, 8),
            capacity: le_u64(raw, 12),
            grain_sectors: le_u64(raw, 20),
            desc_offset: le_u64(raw, 28),
            desc_size: le_u64(raw, 36),
            gtes_per_gt: le_u32(raw, 44),
            rgd_offset: le_u64(raw, 48),
            gd_offset: le_u64(raw, 56),
        };
        if h.capacity > MAX_CAPACITY_SECTORS {
            return Err(file.corrupt(format!("capacity of {} sectors is too large", h.capacity)));
        }
        if !h.grain_sectors.is_power_of_two() || h.grain_sectors > 4096 {
            return Err(file.corrupt(format!("bad grain size of {} sectors", h.grain_sectors)));
        }
        if !h.gtes_per_gt.is_power_of_two() || !(128..=4096).contains(&h.gtes_per_gt) {
            return Err(file.corrupt(format!("bad grain table size of {} entries", h.gtes_per_gt)));
        }
        if h.flags & FLAG_COMPRESSED != 0 && le_u16(raw, 77) != COMPRESS_DEFLATE {
            return Err(file.unsupported(format!("compression algorithm {}", le_u16(raw, 77))));
        }
        if h.desc_size > (super::descriptor::MAX_DESCRIPTOR as u64) / SECTOR {
            return Err(file.corrupt(format!(
                "descriptor of {} sectors is too large",
                h.desc_size
            )));
        }
        Ok(h)
    }

    /// Grain directory entries needed for the capacity.
    fn gd_entries(&self) -> u64 {
        self.capacity
            .div_ceil(self.grain_sectors * u64::from(self.gtes_per_gt))
    }
}

/// An open sparse extent.
pub(crate) struct SparseExtent {
    pub file: ImageFile,
    pub header: SparseHeader,
    gd: Vec<u32>,
    rgd: Option<Vec<u32>>,
    gt_cache: HashMap<u64, Vec<u32>>,
    /// Where the next grain or grain table is appended (bytes).
    next_free: u64,
}

/// Most grain tables kept in memory per extent (at most 16 KiB each: 64 MiB).
const MAX_CACHED_TABLES: usize = 4096;

fn read_u32_table(file: &ImageFile, offset: u64, entries: u64, what: &str) -> Result<Vec<u32>> {
    let bytes = entries * 4;
    if bytes > MAX_TABLE_BYTES
        || offset
            .checked_add(bytes)
            .is_none_or(|e| e > file.len().unwrap_or(0))
    {
        return Err(file.corrupt(format!(
            "{what} at {offset:#x} ({entries} entries) is outside the file"
        )));
    }
    let mut raw = vec![0u8; bytes as usize];
    file.read_exact_at(&mut raw, offset, what)?;
    Ok(raw.chunks_exact(4).map(|c| le_u32(c, 0)).collect())
}

impl SparseExtent {
    pub(crate) fn open(path: &Path, read_only: bool) -> Result<SparseExtent> {
        let file = ImageFile::open(path, read_only, Format::Vmdk)?;
        let mut raw = [0u8; 512];
        file.read_exact_at(&mut raw, 0, "sparse extent header")?;
        let mut header = SparseHeader::parse(&file, &raw)?;
        let file_len = file.len()?;
        if header.gd_offset == GD_AT_END {
            // Stream-optimized: footer marker, footer header, end-of-stream marker.
            if file_len < 1536 + 512 {
                return Err(file.corrupt("stream-optimized image too short for its footer"));
            }
            let mut foot = [0u8; 1536];
            file.read_exact_at(&mut foot, file_len - 1536, "stream footer")?;
            if le_u32(&foot, 12) != MARKER_FOOTER || le_u64(&foot, 1024) != 0 {
                return Err(file.corrupt("stream-optimized footer markers are missing"));
            }
            let mut footer_raw = [0u8; 512];
            footer_raw.copy_from_slice(&foot[512..1024]);
            header = SparseHeader::parse(&file, &footer_raw)?;
            if header.gd_offset == GD_AT_END {
                return Err(file.corrupt("stream footer does not locate the grain directory"));
            }
        }
        if header.flags & FLAG_COMPRESSED != 0 && !read_only {
            return Err(
                file.unsupported("writing compressed (streamOptimized) extents; open read-only")
            );
        }
        let entries = header.gd_entries();
        let gd_offset = header
            .gd_offset
            .checked_mul(SECTOR)
            .ok_or_else(|| file.corrupt("bad grain directory offset"))?;
        let copies = if header.flags & FLAG_RGD != 0 && header.rgd_offset != 0 {
            2
        } else {
            1
        };
        crate::budget::charge(path, "grain directory", entries.saturating_mul(4 * copies))?;
        let gd = read_u32_table(&file, gd_offset, entries, "grain directory")?;
        let rgd = if header.flags & FLAG_RGD != 0 && header.rgd_offset != 0 {
            let off = header
                .rgd_offset
                .checked_mul(SECTOR)
                .ok_or_else(|| file.corrupt("bad redundant grain directory offset"))?;
            Some(read_u32_table(
                &file,
                off,
                entries,
                "redundant grain directory",
            )?)
        } else {
            None
        };
        for (i, &gt) in gd.iter().enumerate() {
            if gt != 0 && u64::from(gt) * SECTOR >= file_len {
                return Err(file.corrupt(format!(
                    "grain table {i} at sector {gt} is past the end of the file"
                )));
            }
        }
        let next_free = file_len.div_ceil(SECTOR) * SECTOR;
        Ok(SparseExtent {
            file,
            header,
            gd,
            rgd,
            gt_cache: HashMap::new(),
            next_free,
        })
    }

    /// The embedded descriptor, if the extent has one.
    pub(crate) fn embedded_descriptor(&self) -> Result<Option<Vec<u8>>> {
        if self.header.desc_offset == 0 || self.header.desc_size == 0 {
            return Ok(None);
        }
        let mut d = vec![0u8; (self.header.desc_size * SECTOR) as usize];
        self.file
            .read_padded_at(&mut d, self.header.desc_offset.saturating_mul(SECTOR))?;
        Ok(Some(d))
    }

    pub(crate) fn grain_bytes(&self) -> u64 {
        self.header.grain_sectors * SECTOR
    }

    pub(crate) fn size(&self) -> u64 {
        self.header.capacity * SECTOR
    }

    fn gt_entries(&self) -> u64 {
        u64::from(self.header.gtes_per_gt)
    }

    /// The grain table `gd_index`, loaded and validated on first use.
    fn table(&mut self, gd_index: u64) -> Result<Option<&mut Vec<u32>>> {
        let gt = self.gd[gd_index as usize];
        if gt == 0 {
            return Ok(None);
        }
        if !self.gt_cache.contains_key(&gd_index) {
            // Tables are written through to the file, so dropping them loses nothing; the
            // guest cannot make the cache grow with the size of the disk.
            if self.gt_cache.len() >= MAX_CACHED_TABLES {
                self.gt_cache.clear();
            }
            let t = read_u32_table(
                &self.file,
                u64::from(gt) * SECTOR,
                self.gt_entries(),
                "grain table",
            )?;
            let file_len = self.file.len()?;
            let zero_ok = self.header.flags & FLAG_ZERO_GRAIN != 0;
            for (i, &e) in t.iter().enumerate() {
                if e > GTE_ZERO && u64::from(e) * SECTOR >= file_len || e == GTE_ZERO && !zero_ok {
                    return Err(self.file.corrupt(format!(
                        "grain table {gd_index} entry {i} points at sector {e}, outside the data"
                    )));
                }
            }
            self.gt_cache.insert(gd_index, t);
        }
        Ok(self.gt_cache.get_mut(&gd_index))
    }

    /// State of grain `grain` (index from the start of the extent).
    pub(crate) fn lookup(&mut self, grain: u64) -> Result<Grain> {
        let per = self.gt_entries();
        let compressed = self.header.flags & FLAG_COMPRESSED != 0;
        let Some(t) = self.table(grain / per)? else {
            return Ok(Grain::Unallocated);
        };
        Ok(match t[(grain % per) as usize] {
            0 => Grain::Unallocated,
            GTE_ZERO => Grain::Zero,
            s if compressed => Grain::Compressed(u64::from(s) * SECTOR),
            s => Grain::Data(u64::from(s) * SECTOR),
        })
    }

    /// Decompress the grain at `offset` into `out` (one grain; short data zero-filled).
    pub(crate) fn read_compressed(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        let grain = self.grain_bytes() as usize;
        let (data_off, len) = if self.header.flags & FLAG_MARKERS != 0 {
            let mut m = [0u8; 12];
            self.file.read_exact_at(&mut m, offset, "grain marker")?;
            let size = le_u32(&m, 8) as usize;
            if size == 0 || size > grain * 2 + 4096 {
                return Err(self.file.corrupt(format!(
                    "compressed grain at {offset:#x} has bad size {size}"
                )));
            }
            (offset + 12, size)
        } else {
            (offset, grain * 2 + 4096)
        };
        let mut comp = vec![0u8; len];
        self.file.read_padded_at(&mut comp, data_off)?;
        let data =
            miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(&comp, grain).map_err(|e| {
                self.file.corrupt(format!(
                    "compressed grain at {offset:#x} does not inflate: {e:?}"
                ))
            })?;
        let n = data.len().min(out.len());
        out[..n].copy_from_slice(&data[..n]);
        out[n..].fill(0);
        Ok(())
    }

    /// Append zeroed space of `bytes` and return its offset.
    fn append(&mut self, bytes: u64) -> Result<u64> {
        let at = self.next_free;
        if (at + bytes) / SECTOR > u64::from(u32::MAX) {
            return Err(self
                .file
                .corrupt("extent file would grow past what 32-bit grain entries address"));
        }
        self.next_free = at + bytes;
        if self.file.len()? < self.next_free {
            self.file.set_len(self.next_free)?;
        }
        Ok(at)
    }

    /// Allocate the grain tables (primary and redundant) for `gd_index`.
    fn allocate_table(&mut self, gd_index: u64) -> Result<()> {
        let bytes = (self.gt_entries() * 4).div_ceil(SECTOR) * SECTOR;
        let primary = self.append(bytes)?;
        let gd_pos = self.header.gd_offset * SECTOR + gd_index * 4;
        if let Some(rgd) = self.rgd.as_mut() {
            let redundant = self.next_free;
            if rgd[gd_index as usize] == 0 {
                self.append(bytes)?;
                let sector = (redundant / SECTOR) as u32;
                if let Some(r) = self.rgd.as_mut() {
                    r[gd_index as usize] = sector;
                }
                let pos = self.header.rgd_offset * SECTOR + gd_index * 4;
                self.file.write_all_at(&sector.to_le_bytes(), pos)?;
            }
        }
        let sector = (primary / SECTOR) as u32;
        self.file.write_all_at(&sector.to_le_bytes(), gd_pos)?;
        self.gd[gd_index as usize] = sector;
        if self.gt_cache.len() >= MAX_CACHED_TABLES {
            self.gt_cache.clear();
        }
        self.gt_cache
            .insert(gd_index, vec![0; self.gt_entries() as usize]);
        Ok(())
    }

    /// Point grain `grain` at `value` (a sector, 0 or GTE_ZERO) in both grain tables.
    fn set_entry(&mut self, grain: u64, value: u32) -> Result<()> {
        let per = self.gt_entries();
        let gd_index = grain / per;
        if self.gd[gd_index as usize] == 0 {
            if value == 0 {
                return Ok(());
            }
            self.allocate_table(gd_index)?;
        }
        let idx = grain % per;
        if let Some(t) = self.table(gd_index)? {
            t[idx as usize] = value;
        }
        let pos = u64::from(self.gd[gd_index as usize]) * SECTOR + idx * 4;
        self.file.write_all_at(&value.to_le_bytes(), pos)?;
        if let Some(r) = self
            .rgd
            .as_ref()
            .map(|r| r[gd_index as usize])
            .filter(|&r| r != 0)
        {
            self.file
                .write_all_at(&value.to_le_bytes(), u64::from(r) * SECTOR + idx * 4)?;
        }
        Ok(())
    }

    /// Allocate grain `grain` holding `data` (a whole grain) and return its file offset.
    /// Data is written before the tables point at it; with `durable_first` (grains that
    /// hide a backing file) it is also made durable first, so a crash never exposes a
    /// zeroed grain where the backing file's data was.
    pub(crate) fn allocate_grain(
        &mut self,
        grain: u64,
        data: Option<&[u8]>,
        durable_first: bool,
    ) -> Result<u64> {
        let at = self.append(self.grain_bytes())?;
        if let Some(d) = data {
            self.file.write_all_at(d, at)?;
            if durable_first {
                self.file.sync_data()?;
            }
        }
        self.set_entry(grain, (at / SECTOR) as u32)?;
        Ok(at)
    }

    /// Drop grain `grain`: it reads as zeroes (zeroed-grain entry) or, with `to_backing`,
    /// from the backing file (unallocated entry). Returns false when the format cannot
    /// express "zero" here and the caller must write zeroes instead.
    pub(crate) fn unmap_grain(&mut self, grain: u64, to_backing: bool) -> Result<bool> {
        let value = if to_backing {
            0
        } else if self.header.flags & FLAG_ZERO_GRAIN != 0 {
            GTE_ZERO
        } else {
            return Ok(false);
        };
        let old = self.lookup(grain)?;
        self.set_entry(grain, value)?;
        if let Grain::Data(off) = old {
            self.file.zero_range(off, self.grain_bytes())?;
        }
        Ok(true)
    }
}

/// Bytes of a fresh monolithicSparse file laid out as qemu does: header, embedded
/// descriptor (20 sectors), redundant GD and tables, GD and tables, grains from a grain
/// boundary. Returns (the file's metadata bytes, descriptor offset, descriptor room).
pub(crate) fn new_sparse_layout(
    capacity: u64,
    grain_sectors: u64,
    zeroed_grains: bool,
) -> (Vec<u8>, u64, u64) {
    let gtes: u64 = 512;
    let grains = capacity.div_ceil(grain_sectors);
    let gt_sectors = (gtes * 4).div_ceil(SECTOR);
    let gt_count = grains.div_ceil(gtes);
    let gd_sectors = (gt_count * 4).div_ceil(SECTOR);
    let desc_offset = 1u64;
    let desc_size = 20u64;
    let rgd_offset = desc_offset + desc_size;
    let gd_offset = rgd_offset + gd_sectors + gt_sectors * gt_count;
    let grain_offset =
        (gd_offset + gd_sectors + gt_sectors * gt_count).div_ceil(grain_sectors) * grain_sectors;
    let mut file = vec![0u8; (grain_offset * SECTOR) as usize];
    let h = &mut file[..512];
    h[..4].copy_from_slice(MAGIC);
    h[4..8].copy_from_slice(&(if zeroed_grains { 2u32 } else { 1 }).to_le_bytes());
    let flags = FLAG_NL_DETECT | FLAG_RGD | if zeroed_grains { FLAG_ZERO_GRAIN } else { 0 };
    h[8..12].copy_from_slice(&flags.to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&grain_sectors.to_le_bytes());
    h[28..36].copy_from_slice(&desc_offset.to_le_bytes());
    h[36..44].copy_from_slice(&desc_size.to_le_bytes());
    h[44..48].copy_from_slice(&(gtes as u32).to_le_bytes());
    h[48..56].copy_from_slice(&rgd_offset.to_le_bytes());
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&grain_offset.to_le_bytes());
    h[73..77].copy_from_slice(b"\n \r\n");
    for (gd, first_gt) in [
        (rgd_offset, rgd_offset + gd_sectors),
        (gd_offset, gd_offset + gd_sectors),
    ] {
        for i in 0..gt_count {
            let pos = (gd * SECTOR + i * 4) as usize;
            let gt = (first_gt + i * gt_sectors) as u32;
            file[pos..pos + 4].copy_from_slice(&gt.to_le_bytes());
        }
    }
    (file, desc_offset * SECTOR, desc_size * SECTOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grain_table_cache_stays_bounded() {
        // 4100 grain tables (512 grains of 64 KiB each): a guest reading across the disk
        // loads every one of them.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.vmdk");
        let size = 4100 * 512 * 65536;
        crate::create(path.as_path(), Format::Vmdk, size, &Default::default()).unwrap();
        let mut extent = SparseExtent::open(&path, true).unwrap();
        let tables = extent.gd.len() as u64;
        assert!(tables > MAX_CACHED_TABLES as u64);
        let mut most = 0;
        for i in 0..tables {
            extent.lookup(i * extent.gt_entries()).unwrap();
            most = most.max(extent.gt_cache.len());
        }
        assert_eq!(most, MAX_CACHED_TABLES);
        assert!(matches!(extent.lookup(0).unwrap(), Grain::Unallocated));
    }
}
