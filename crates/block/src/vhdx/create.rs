//! Creating dynamic, fixed and differencing VHDX images, laid out as qemu does: header
//! section (1 MiB), log (1 MiB), metadata (1 MiB), BAT, then payload blocks.

use std::path::Path;

use super::headers::{
    encode_region_table, read_current_header, Header, Region, BAT_REGION, HEADER_OFFSETS,
    METADATA_REGION, MIB, REGION_OFFSETS,
};
use super::metadata::{encode_metadata, MAX_DISK_SIZE};
use super::{parent, VhdxImage, PAYLOAD_FULLY_PRESENT, SECTORS_PER_BITMAP};
use crate::image_file::{random_uuid, ImageFile};
use crate::{CreateOptions, DiskImage, Error, Format, Result};

const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u32 = MIB as u32;
const METADATA_OFFSET: u64 = 2 * MIB;

/// qemu's default block size for a disk of `size` bytes.
fn default_block_size(size: u64) -> u64 {
    match size {
        s if s > 32 << 40 => 64 << 20,
        s if s > 100 << 30 => 32 << 20,
        s if s > 1 << 30 => 16 << 20,
        _ => 8 << 20,
    }
}

/// Create a VHDX of `size` bytes: dynamic, fixed with `opts.fixed`, or differencing with
/// `opts.backing` (a VHDX parent; `size` 0 means the parent's size).
pub fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<()> {
    let mut size = size;
    let mut locator = None;
    if let Some((parent_path, fmt)) = &opts.backing {
        if fmt.is_some_and(|f| f != Format::Vhdx) || opts.fixed {
            return Err(Error::InvalidArgument(
                "a differencing VHDX needs a VHDX parent and cannot be fixed".into(),
            ));
        }
        let resolved = if parent_path.is_absolute() {
            parent_path.clone()
        } else {
            match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.join(parent_path),
                _ => parent_path.clone(),
            }
        };
        // The user named this parent; its own chain is only read here.
        let parent_img = VhdxImage::open(&resolved, true, true)?;
        if size != 0 && size != parent_img.size() {
            return Err(Error::InvalidArgument(format!(
                "a differencing VHDX has its parent's size {}",
                parent_img.size()
            )));
        }
        size = parent_img.size();
        let (h, _) = read_current_header(&ImageFile::open(&resolved, true, Format::Vhdx)?)?;
        locator = Some(parent::build_locator(path, &resolved, &h.data_write_guid));
    }
    if !size.is_multiple_of(512) || size > MAX_DISK_SIZE {
        return Err(Error::InvalidArgument(format!(
            "VHDX size {size} must be a multiple of 512 and at most 64 TiB"
        )));
    }
    let block_size = opts.cluster_size.unwrap_or_else(|| {
        if locator.is_some() {
            2 << 20
        } else {
            default_block_size(size)
        }
    });
    if !block_size.is_power_of_two() || !(MIB..=256 * MIB).contains(&block_size) {
        return Err(Error::InvalidArgument(format!(
            "VHDX block size {block_size} must be a power of two from 1 MiB to 256 MiB"
        )));
    }
    let chunk_ratio = SECTORS_PER_BITMAP * 512 / block_size;
    let blocks = size.div_ceil(block_size);
    let entries = if locator.is_some() {
        blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
    } else {
        blocks + blocks.saturating_sub(1) / chunk_ratio
    };
    let bat_offset = METADATA_OFFSET + MIB;
    let bat_length = (entries * 8).div_ceil(MIB).max(1) * MIB;
    let data_start = bat_offset + bat_length;

    let file = ImageFile::create(path, Format::Vhdx)?;
    let mut ident = vec![0u8; 8 + 512];
    ident[..8].copy_from_slice(b"vhdxfile");
    for (i, u) in "vessel".encode_utf16().enumerate() {
        ident[8 + i * 2..10 + i * 2].copy_from_slice(&u.to_le_bytes());
    }
    file.write_all_at(&ident, 0)?;
    let regions = [
        Region {
            guid: BAT_REGION,
            offset: bat_offset,
            length: bat_length as u32,
            required: true,
        },
        Region {
            guid: METADATA_REGION,
            offset: METADATA_OFFSET,
            length: MIB as u32,
            required: true,
        },
    ];
    let table = encode_region_table(&regions);
    for off in REGION_OFFSETS {
        file.write_all_at(&table, off)?;
    }
    let meta = encode_metadata(
        block_size as u32,
        opts.fixed,
        size,
        random_uuid(),
        locator.as_deref(),
    );
    // Only the table and the items hold data: leave the rest of the region a hole.
    file.write_all_at(&meta[..(64 << 10) + 4096], METADATA_OFFSET)?;
    let mut end = data_start;
    if opts.fixed {
        let bat: Vec<u8> = (0..entries)
            .flat_map(|i| {
                let is_bitmap = (i + 1) % (chunk_ratio + 1) == 0;
                let block = i - i / (chunk_ratio + 1);
                let v = if is_bitmap {
                    0
                } else {
                    PAYLOAD_FULLY_PRESENT | ((data_start + block * block_size) / MIB) << 20
                };
                v.to_le_bytes()
            })
            .collect();
        file.write_all_at(&bat, bat_offset)?;
        end = data_start + blocks * block_size;
        file.preallocate(data_start, end - data_start)?;
    }
    file.set_len(end)?;
    let mut header = Header {
        sequence: 0,
        file_write_guid: random_uuid(),
        data_write_guid: random_uuid(),
        log_guid: [0; 16],
        log_length: LOG_LENGTH,
        log_offset: LOG_OFFSET,
    };
    for off in HEADER_OFFSETS {
        header.sequence += 1;
        file.write_all_at(&header.encode(), off)?;
    }
    file.sync_data()
}
