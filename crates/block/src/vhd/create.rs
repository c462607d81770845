//! Creating fixed, dynamic and differencing VHDs.

use std::path::Path;

use super::footer::{
    DynHeader, Footer, BAT_FREE, DEFAULT_BLOCK_SIZE, DYN_HEADER_SIZE, FOOTER_SIZE, MAX_DISK_SIZE,
    SECTOR, TYPE_DIFFERENCING, TYPE_DYNAMIC, TYPE_FIXED,
};
use super::{identity, parent, resolve_parent};
use crate::image_file::ImageFile;
use crate::{CreateOptions, Error, Format, Result};

/// Create a VHD of exactly `size` bytes: fixed with `opts.fixed`, differencing with
/// `opts.backing` (the parent must be a VHD; `size` 0 means the parent's size), dynamic
/// otherwise.
pub fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<()> {
    let mut size = size;
    let mut parent_info = None;
    if let Some((parent_path, fmt)) = &opts.backing {
        if fmt.is_some_and(|f| f != Format::Vhd) || opts.fixed {
            return Err(Error::InvalidArgument(
                "a differencing VHD needs a VHD parent and cannot be fixed".into(),
            ));
        }
        let parent_path = resolve_parent(path, parent_path);
        let (uid, timestamp, parent_size) = identity(&parent_path)?;
        if size != 0 && size != parent_size {
            return Err(Error::InvalidArgument(format!(
                "a differencing VHD has its parent's size {parent_size}, not {size}"
            )));
        }
        size = parent_size;
        parent_info = Some((parent_path, uid, timestamp));
    }
    if !size.is_multiple_of(SECTOR) || size > MAX_DISK_SIZE {
        return Err(Error::InvalidArgument(format!(
            "VHD size {size} must be a multiple of 512 and at most 2040 GiB"
        )));
    }
    let block_size = match opts.cluster_size {
        None => DEFAULT_BLOCK_SIZE,
        Some(b) if b.is_power_of_two() && (1 << 20..=256 << 20).contains(&b) => b as u32,
        Some(b) => {
            return Err(Error::InvalidArgument(format!(
                "VHD block size {b} must be a power of two from 1 MiB to 256 MiB"
            )))
        }
    };
    let file = ImageFile::create(path, Format::Vhd)?;
    if opts.fixed {
        let footer = Footer::new(size, TYPE_FIXED, u64::MAX);
        file.preallocate(0, size)?;
        file.write_all_at(&footer.raw, size)?;
        return file.sync_data();
    }
    let disk_type = if parent_info.is_some() {
        TYPE_DIFFERENCING
    } else {
        TYPE_DYNAMIC
    };
    let footer = Footer::new(size, disk_type, FOOTER_SIZE as u64);
    let entries = size.div_ceil(u64::from(block_size));
    let table_offset = (FOOTER_SIZE + DYN_HEADER_SIZE) as u64;
    let bat_bytes = (entries * 4).div_ceil(SECTOR) * SECTOR;
    let mut header = DynHeader::new(table_offset, entries as u32, block_size);
    let mut end = table_offset + bat_bytes;
    if let Some((parent_path, uid, timestamp)) = &parent_info {
        header.raw[40..56].copy_from_slice(uid);
        header.raw[56..60].copy_from_slice(&timestamp.to_be_bytes());
        let locators = parent::build_locators(path, parent_path);
        end = parent::store_locators(&mut header.raw, parent_path, &locators, end);
        let mut at = table_offset + bat_bytes;
        for (_, data) in &locators {
            file.write_all_at(data, at)?;
            at += (data.len() as u64).div_ceil(SECTOR).max(1) * SECTOR;
        }
        header.seal();
    }
    file.write_all_at(&footer.raw, 0)?;
    file.write_all_at(&header.raw, FOOTER_SIZE as u64)?;
    let bat: Vec<u8> = std::iter::repeat_n(BAT_FREE.to_be_bytes(), entries as usize)
        .flatten()
        .chain(std::iter::repeat_n(
            0xff,
            (bat_bytes - entries * 4) as usize,
        ))
        .collect();
    file.write_all_at(&bat, table_offset)?;
    file.write_all_at(&footer.raw, end)?;
    file.sync_data()
}
