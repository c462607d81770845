//! The VHD footer, the dynamic disk header and qemu-compatible CHS geometry.

use crate::image_file::{be_u32, be_u64, ImageFile};
use crate::Result;

pub(crate) const FOOTER_SIZE: usize = 512;
pub(crate) const DYN_HEADER_SIZE: usize = 1024;
pub(crate) const SECTOR: u64 = 512;
pub(crate) const TYPE_FIXED: u32 = 2;
pub(crate) const TYPE_DYNAMIC: u32 = 3;
pub(crate) const TYPE_DIFFERENCING: u32 = 4;
/// BAT entry of an unallocated block.
pub(crate) const BAT_FREE: u32 = 0xffff_ffff;
pub(crate) const DEFAULT_BLOCK_SIZE: u32 = 2 << 20;
/// Largest disk the format allows (qemu: 2040 GiB).
pub(crate) const MAX_DISK_SIZE: u64 = 0xff00_0000 * SECTOR;
/// CHS value that means "size is in current_size" (qemu's VHD_MAX_GEOMETRY).
const MAX_GEOMETRY: u64 = 65535 * 16 * 255;
/// Seconds from the Unix epoch to the VHD epoch (2000-01-01 00:00:00 UTC).
const VHD_EPOCH: u64 = 946_684_800;
/// Our creator application tag.
const CREATOR_APP: &[u8; 4] = b"vssl";

/// The fields of a footer that vessel uses; `raw` keeps the whole sector.
#[derive(Debug, Clone)]
pub(crate) struct Footer {
    pub data_offset: u64,
    pub timestamp: u32,
    pub disk_type: u32,
    pub unique_id: [u8; 16],
    /// Virtual size as qemu computes it (CHS or current_size, by creator application).
    pub virtual_size: u64,
    pub raw: [u8; FOOTER_SIZE],
}

/// Byte sum checksum over a structure whose checksum field (4 bytes at `field`) counts as 0.
pub(crate) fn checksum(bytes: &[u8], field: usize) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

impl Footer {
    /// Parse and validate a footer sector (`Err` names the problem).
    pub(crate) fn parse(file: &ImageFile, raw: [u8; FOOTER_SIZE]) -> Result<Footer> {
        if &raw[..8] != b"conectix" {
            return Err(file.corrupt("no footer cookie \"conectix\""));
        }
        let stored = be_u32(&raw, 64);
        let computed = checksum(&raw, 64);
        if stored != computed {
            return Err(file.corrupt(format!(
                "footer checksum {stored:#010x} does not match the computed {computed:#010x}"
            )));
        }
        let version = be_u32(&raw, 12);
        if version >> 16 != 1 {
            return Err(file.unsupported(format!("VHD version {version:#x}")));
        }
        let disk_type = be_u32(&raw, 60);
        if !matches!(disk_type, TYPE_FIXED | TYPE_DYNAMIC | TYPE_DIFFERENCING) {
            return Err(file.corrupt(format!("unknown disk type {disk_type}")));
        }
        let current_size = be_u64(&raw, 48);
        let cyls = u64::from(u16::from_be_bytes([raw[56], raw[57]]));
        let chs = cyls * u64::from(raw[58]) * u64::from(raw[59]);
        let creator = (&raw[28..32], &raw[36..40]);
        // qemu's rule: Virtual PC and old qemu images are sized by CHS, unless the geometry
        // is the maximum one; everything else by current_size.
        let use_chs = matches!(creator, (b"vpc ", b"Wi2k") | (b"qemu", b"Wi2k"));
        let virtual_size = if use_chs && chs != MAX_GEOMETRY {
            chs * SECTOR
        } else {
            current_size
        };
        if virtual_size % SECTOR != 0 {
            return Err(file.corrupt(format!("disk size {virtual_size} is not a multiple of 512")));
        }
        if virtual_size > MAX_DISK_SIZE {
            return Err(file.corrupt(format!("disk size {virtual_size} exceeds 2040 GiB")));
        }
        let mut unique_id = [0u8; 16];
        unique_id.copy_from_slice(&raw[68..84]);
        Ok(Footer {
            data_offset: be_u64(&raw, 16),
            timestamp: be_u32(&raw, 24),
            disk_type,
            unique_id,
            virtual_size,
            raw,
        })
    }

    /// A new footer for a disk of `size` bytes (a multiple of 512).
    pub(crate) fn new(size: u64, disk_type: u32, data_offset: u64) -> Footer {
        let mut raw = [0u8; FOOTER_SIZE];
        raw[..8].copy_from_slice(b"conectix");
        raw[8..12].copy_from_slice(&2u32.to_be_bytes());
        raw[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        raw[16..24].copy_from_slice(&data_offset.to_be_bytes());
        let timestamp = vhd_timestamp();
        raw[24..28].copy_from_slice(&timestamp.to_be_bytes());
        raw[28..32].copy_from_slice(CREATOR_APP);
        raw[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        raw[36..40].copy_from_slice(b"Lnux");
        raw[40..48].copy_from_slice(&size.to_be_bytes());
        raw[48..56].copy_from_slice(&size.to_be_bytes());
        // Readers size VHDs from CHS or from current_size depending on the creator
        // application (and qemu's table changed between versions). Every reader agrees
        // when the geometry either matches the size exactly or is the maximum geometry,
        // which means "use current_size" (what qemu's force_size writes).
        let (c, h, s) = match geometry(size / SECTOR) {
            (c, h, s) if u64::from(c) * u64::from(h) * u64::from(s) * SECTOR == size => (c, h, s),
            _ => (65535, 16, 255),
        };
        raw[56..58].copy_from_slice(&c.to_be_bytes());
        raw[58] = h;
        raw[59] = s;
        raw[60..64].copy_from_slice(&disk_type.to_be_bytes());
        let unique_id = crate::image_file::random_uuid();
        raw[68..84].copy_from_slice(&unique_id);
        let sum = checksum(&raw, 64);
        raw[64..68].copy_from_slice(&sum.to_be_bytes());
        Footer {
            data_offset,
            timestamp,
            disk_type,
            unique_id,
            virtual_size: size,
            raw,
        }
    }
}

/// Now, in seconds since 2000-01-01 UTC (saturating).
pub(crate) fn vhd_timestamp() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(now.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX)
}

/// CHS geometry for `total_sectors`, as qemu's `calculate_geometry` (VHD spec appendix).
pub(crate) fn geometry(total_sectors: u64) -> (u16, u8, u8) {
    let total = total_sectors.min(MAX_GEOMETRY);
    let (mut spt, mut heads, mut cth): (u64, u64, u64);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        spt = 17;
        cth = total / spt;
        heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
    }
    ((cth / heads).min(65535) as u16, heads as u8, spt as u8)
}

/// The dynamic disk header ("cxsparse").
#[derive(Debug, Clone)]
pub(crate) struct DynHeader {
    pub table_offset: u64,
    pub max_table_entries: u32,
    pub block_size: u32,
    pub parent_unique_id: [u8; 16],
    pub raw: [u8; DYN_HEADER_SIZE],
}

impl DynHeader {
    pub(crate) fn parse(file: &ImageFile, raw: [u8; DYN_HEADER_SIZE]) -> Result<DynHeader> {
        if &raw[..8] != b"cxsparse" {
            return Err(file.corrupt("no dynamic header cookie \"cxsparse\""));
        }
        let stored = be_u32(&raw, 36);
        let computed = checksum(&raw, 36);
        if stored != computed {
            return Err(file.corrupt(format!(
                "dynamic header checksum {stored:#010x} does not match the computed {computed:#010x}"
            )));
        }
        let version = be_u32(&raw, 24);
        if version >> 16 != 1 {
            return Err(file.unsupported(format!("dynamic header version {version:#x}")));
        }
        let block_size = be_u32(&raw, 32);
        if !block_size.is_power_of_two() || !(SECTOR as u32..=256 << 20).contains(&block_size) {
            return Err(file.corrupt(format!("bad block size {block_size}")));
        }
        let mut parent_unique_id = [0u8; 16];
        parent_unique_id.copy_from_slice(&raw[40..56]);
        Ok(DynHeader {
            table_offset: be_u64(&raw, 16),
            max_table_entries: be_u32(&raw, 28),
            block_size,
            parent_unique_id,
            raw,
        })
    }

    /// A new header; the caller fills parent fields and then calls [`DynHeader::seal`].
    pub(crate) fn new(table_offset: u64, entries: u32, block_size: u32) -> DynHeader {
        let mut raw = [0u8; DYN_HEADER_SIZE];
        raw[..8].copy_from_slice(b"cxsparse");
        raw[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        raw[16..24].copy_from_slice(&table_offset.to_be_bytes());
        raw[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        raw[28..32].copy_from_slice(&entries.to_be_bytes());
        raw[32..36].copy_from_slice(&block_size.to_be_bytes());
        let mut h = DynHeader {
            table_offset,
            max_table_entries: entries,
            block_size,
            parent_unique_id: [0; 16],
            raw,
        };
        h.seal();
        h
    }

    /// Recompute the checksum.
    pub(crate) fn seal(&mut self) {
        let sum = checksum(&self.raw, 36);
        self.raw[36..40].copy_from_slice(&sum.to_be_bytes());
    }

    /// Bytes of the sector bitmap in front of each block (a whole number of sectors).
    pub(crate) fn bitmap_size(&self) -> u64 {
        (u64::from(self.block_size) / SECTOR)
            .div_ceil(8)
            .div_ceil(SECTOR)
            * SECTOR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_qemu_for_known_sizes() {
        // 1 GiB: 2080/16/63 (2096640 sectors); qemu-img create then retries with more
        // sectors until the CHS size covers the request and stores 2081/16/63.
        assert_eq!(geometry(2 * 1024 * 1024), (2080, 16, 63));
        assert_eq!(geometry(2 * 1024 * 1024 + 512), (2081, 16, 63));
        // Small disks use 17 sectors per track and at least 4 heads.
        assert_eq!(geometry(20480), (301, 4, 17));
    }
}
