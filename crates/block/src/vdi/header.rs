//! The VDI pre-header and header (VirtualBox format version 1.1).

use crate::image_file::{le_u32, le_u64, ImageFile, MAX_TABLE_BYTES};
use crate::Result;

/// Text at the start of every VDI file (qemu writes the "QEMU" variant; any text is
/// accepted on open).
pub(crate) const PRE_HEADER_TEXT: &[u8] = b"<<< Oracle VM VirtualBox Disk Image >>>\n";
pub(crate) const SIGNATURE: u32 = 0xbeda_107f;
pub(crate) const VERSION_1_1: u32 = 0x0001_0001;
/// Size of the on-disk header block (pre-header + header + padding).
pub(crate) const HEADER_BLOCK: usize = 512;
/// `header_size` field of a version 1.1 header.
const HEADER_SIZE_V1_1: u32 = 0x180;
pub(crate) const TYPE_DYNAMIC: u32 = 1;
pub(crate) const TYPE_FIXED: u32 = 2;
pub(crate) const SECTOR: u64 = 512;
/// Block map entry: block not allocated, reads as zeroes.
pub(crate) const BLOCK_FREE: u32 = 0xffff_ffff;
/// Block map entry: block discarded, reads as zeroes.
pub(crate) const BLOCK_ZERO: u32 = 0xffff_fffe;
pub(crate) const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;
/// Largest virtual disk accepted (VirtualBox's limit is below 2 PiB; we bound the map).
const MAX_DISK_SIZE: u64 = 1 << 50;

/// The header fields vessel uses; `raw` keeps the rest (comment, geometry, UUIDs) intact.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub image_type: u32,
    pub offset_bmap: u32,
    pub offset_data: u32,
    pub disk_size: u64,
    pub block_size: u32,
    pub block_extra: u32,
    pub blocks_in_image: u32,
    pub blocks_allocated: u32,
    pub raw: [u8; HEADER_BLOCK],
}

// Field offsets in the header block.
const OFF_SIGNATURE: usize = 0x40;
const OFF_VERSION: usize = 0x44;
const OFF_HEADER_SIZE: usize = 0x48;
const OFF_TYPE: usize = 0x4c;
const OFF_BMAP: usize = 0x154;
const OFF_DATA: usize = 0x158;
const OFF_GEOMETRY: usize = 0x15c;
const OFF_DISK_SIZE: usize = 0x170;
const OFF_BLOCK_SIZE: usize = 0x178;
const OFF_BLOCK_EXTRA: usize = 0x17c;
const OFF_BLOCKS: usize = 0x180;
const OFF_ALLOCATED: usize = 0x184;
const OFF_UUID_CREATE: usize = 0x188;
const OFF_UUID_MODIFY: usize = 0x198;
const OFF_UUID_LINK: usize = 0x1a8;

impl Header {
    /// Read and validate the header of `file`.
    pub(crate) fn read(file: &ImageFile) -> Result<Header> {
        let mut raw = [0u8; HEADER_BLOCK];
        file.read_exact_at(&mut raw, 0, "VDI header")?;
        Self::parse(file, raw, file.len()?)
    }

    /// Validate a header block against the file length.
    pub(crate) fn parse(
        file: &ImageFile,
        raw: [u8; HEADER_BLOCK],
        file_len: u64,
    ) -> Result<Header> {
        let signature = le_u32(&raw, OFF_SIGNATURE);
        if signature != SIGNATURE {
            return Err(file.corrupt(format!(
                "bad signature {signature:#x} (expected {SIGNATURE:#x})"
            )));
        }
        let version = le_u32(&raw, OFF_VERSION);
        if version != VERSION_1_1 {
            return Err(file.unsupported(format!(
                "VDI version {}.{} (only 1.1 is supported)",
                version >> 16,
                version & 0xffff
            )));
        }
        let header_size = le_u32(&raw, OFF_HEADER_SIZE);
        if !(HEADER_SIZE_V1_1..=(HEADER_BLOCK - OFF_HEADER_SIZE) as u32).contains(&header_size) {
            return Err(file.corrupt(format!("bad header size {header_size}")));
        }
        let h = Header {
            image_type: le_u32(&raw, OFF_TYPE),
            offset_bmap: le_u32(&raw, OFF_BMAP),
            offset_data: le_u32(&raw, OFF_DATA),
            disk_size: le_u64(&raw, OFF_DISK_SIZE),
            block_size: le_u32(&raw, OFF_BLOCK_SIZE),
            block_extra: le_u32(&raw, OFF_BLOCK_EXTRA),
            blocks_in_image: le_u32(&raw, OFF_BLOCKS),
            blocks_allocated: le_u32(&raw, OFF_ALLOCATED),
            raw,
        };
        match h.image_type {
            TYPE_DYNAMIC | TYPE_FIXED => {}
            3 => return Err(file.unsupported("undo images (type 3)")),
            4 => return Err(file.unsupported("differencing images (type 4)")),
            t => return Err(file.corrupt(format!("unknown image type {t}"))),
        }
        if raw[OFF_UUID_LINK..OFF_UUID_LINK + 16]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(file.unsupported("images linked to a parent (differencing)"));
        }
        let sector_size = le_u32(&raw, OFF_GEOMETRY + 12);
        if sector_size != 0 && u64::from(sector_size) != SECTOR {
            return Err(file.unsupported(format!("sector size {sector_size}")));
        }
        if !h.block_size.is_power_of_two() || !(512..=(256 << 20)).contains(&h.block_size) {
            return Err(file.corrupt(format!("bad block size {}", h.block_size)));
        }
        if !h.block_extra.is_multiple_of(512) || h.block_extra > (1 << 20) {
            return Err(file.corrupt(format!("bad block extra size {}", h.block_extra)));
        }
        if h.disk_size > MAX_DISK_SIZE {
            return Err(file.corrupt(format!("disk size {} is too large", h.disk_size)));
        }
        if !h.disk_size.is_multiple_of(SECTOR) {
            return Err(file.corrupt(format!(
                "disk size {} is not a multiple of 512",
                h.disk_size
            )));
        }
        let needed_blocks = h.disk_size.div_ceil(u64::from(h.block_size));
        if u64::from(h.blocks_in_image) < needed_blocks {
            return Err(file.corrupt(format!(
                "{} blocks of {} bytes cannot hold the disk size {}",
                h.blocks_in_image, h.block_size, h.disk_size
            )));
        }
        if h.blocks_allocated > h.blocks_in_image {
            return Err(file.corrupt(format!(
                "{} blocks allocated of {} in the image",
                h.blocks_allocated, h.blocks_in_image
            )));
        }
        let bmap_bytes = u64::from(h.blocks_in_image) * 4;
        if bmap_bytes > MAX_TABLE_BYTES {
            return Err(file.corrupt(format!(
                "block map of {} entries is too large",
                h.blocks_in_image
            )));
        }
        let bmap_start = u64::from(h.offset_bmap);
        if bmap_start < HEADER_BLOCK as u64 || bmap_start % SECTOR != 0 {
            return Err(file.corrupt(format!("bad block map offset {bmap_start:#x}")));
        }
        if bmap_start + bmap_bytes > file_len {
            return Err(file.corrupt(format!(
                "block map at {bmap_start:#x} ({bmap_bytes} bytes) is past the end of the file"
            )));
        }
        let data = u64::from(h.offset_data);
        if data % SECTOR != 0 || data < bmap_start + bmap_bytes {
            return Err(file.corrupt(format!("bad data offset {data:#x}")));
        }
        Ok(h)
    }

    /// Bytes of one block slot in the data area (block data plus its extra prefix).
    pub(crate) fn slot_size(&self) -> u64 {
        u64::from(self.block_size) + u64::from(self.block_extra)
    }

    /// File offset of the data of physical block slot `slot`.
    pub(crate) fn slot_offset(&self, slot: u32) -> u64 {
        u64::from(self.offset_data)
            + u64::from(slot) * self.slot_size()
            + u64::from(self.block_extra)
    }

    /// A new header block for an image of `disk_size` bytes.
    pub(crate) fn new(disk_size: u64, block_size: u32, fixed: bool) -> Header {
        let blocks = disk_size.div_ceil(u64::from(block_size)) as u32;
        let bmap_bytes = (u64::from(blocks) * 4).div_ceil(SECTOR) * SECTOR;
        let offset_bmap = HEADER_BLOCK as u32;
        // Data starts on a 1 MiB boundary, like VirtualBox lays it out.
        let offset_data = (u64::from(offset_bmap) + bmap_bytes).div_ceil(1 << 20) * (1 << 20);
        let mut raw = [0u8; HEADER_BLOCK];
        raw[..PRE_HEADER_TEXT.len()].copy_from_slice(PRE_HEADER_TEXT);
        let put = |raw: &mut [u8; HEADER_BLOCK], off: usize, v: u32| {
            raw[off..off + 4].copy_from_slice(&v.to_le_bytes())
        };
        put(&mut raw, OFF_SIGNATURE, SIGNATURE);
        put(&mut raw, OFF_VERSION, VERSION_1_1);
        put(&mut raw, OFF_HEADER_SIZE, HEADER_SIZE_V1_1);
        put(
            &mut raw,
            OFF_TYPE,
            if fixed { TYPE_FIXED } else { TYPE_DYNAMIC },
        );
        put(&mut raw, OFF_GEOMETRY + 12, SECTOR as u32);
        raw[OFF_UUID_CREATE..OFF_UUID_CREATE + 16]
            .copy_from_slice(&crate::image_file::random_uuid());
        raw[OFF_UUID_MODIFY..OFF_UUID_MODIFY + 16]
            .copy_from_slice(&crate::image_file::random_uuid());
        let mut h = Header {
            image_type: if fixed { TYPE_FIXED } else { TYPE_DYNAMIC },
            offset_bmap,
            offset_data: offset_data as u32,
            disk_size,
            block_size,
            block_extra: 0,
            blocks_in_image: blocks,
            blocks_allocated: if fixed { blocks } else { 0 },
            raw,
        };
        h.store();
        h
    }

    /// Write the fields back into `raw`.
    pub(crate) fn store(&mut self) {
        let r = &mut self.raw;
        r[OFF_BMAP..OFF_BMAP + 4].copy_from_slice(&self.offset_bmap.to_le_bytes());
        r[OFF_DATA..OFF_DATA + 4].copy_from_slice(&self.offset_data.to_le_bytes());
        r[OFF_DISK_SIZE..OFF_DISK_SIZE + 8].copy_from_slice(&self.disk_size.to_le_bytes());
        r[OFF_BLOCK_SIZE..OFF_BLOCK_SIZE + 4].copy_from_slice(&self.block_size.to_le_bytes());
        r[OFF_BLOCK_EXTRA..OFF_BLOCK_EXTRA + 4].copy_from_slice(&self.block_extra.to_le_bytes());
        r[OFF_BLOCKS..OFF_BLOCKS + 4].copy_from_slice(&self.blocks_in_image.to_le_bytes());
        r[OFF_ALLOCATED..OFF_ALLOCATED + 4].copy_from_slice(&self.blocks_allocated.to_le_bytes());
    }

    /// Largest disk size `create` accepts.
    pub(crate) fn max_disk_size() -> u64 {
        MAX_DISK_SIZE
    }
}
