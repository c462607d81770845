//! Creating monolithicSparse (default), monolithicFlat (`fixed`) and delta VMDKs.

use std::path::Path;

use super::descriptor::{Descriptor, ExtentKind, ExtentLine};
use super::sparse::{new_sparse_layout, SECTOR};
use super::{dir_of, VmdkImage};
use crate::image_file::{random_uuid, ImageFile};
use crate::{CreateOptions, DiskImage, Error, Format, Result};

/// Default grain: 64 KiB, as qemu and VMware use.
const DEFAULT_GRAIN: u64 = 64 << 10;
/// Sparse extents address sectors with 32-bit grain entries.
const MAX_SPARSE_SIZE: u64 = (u32::MAX as u64) * SECTOR / 2;

/// Create a VMDK of `size` bytes: monolithicSparse, or monolithicFlat with `opts.fixed`
/// (descriptor at `path`, data in `<name>-flat.vmdk`). With `opts.backing` the image is a
/// delta disk over a VMDK parent (`size` 0 takes the parent's size).
pub fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<()> {
    let mut size = size;
    let mut parent = None;
    if let Some((parent_path, fmt)) = &opts.backing {
        if fmt.is_some_and(|f| f != Format::Vmdk) || opts.fixed {
            return Err(Error::InvalidArgument(
                "a VMDK delta disk needs a VMDK parent and cannot be flat".into(),
            ));
        }
        let resolved = if parent_path.is_absolute() {
            parent_path.clone()
        } else {
            dir_of(path).join(parent_path)
        };
        // The user named this parent; its own extents and chain are only read here.
        let img = VmdkImage::open(&resolved, true, true)?;
        let cid = parent_cid(&resolved)?;
        if size == 0 {
            size = img.size();
        }
        let hint = parent_path
            .to_str()
            .ok_or_else(|| Error::InvalidArgument("parent path is not UTF-8".into()))?;
        if hint.contains('"') {
            return Err(Error::InvalidArgument(
                "parent path contains a quote".into(),
            ));
        }
        parent = Some((hint.to_string(), cid));
    }
    if !size.is_multiple_of(SECTOR) || size > MAX_SPARSE_SIZE {
        return Err(Error::InvalidArgument(format!(
            "VMDK size {size} must be a multiple of 512 and at most {MAX_SPARSE_SIZE}"
        )));
    }
    let grain = opts.cluster_size.unwrap_or(DEFAULT_GRAIN);
    if !grain.is_power_of_two() || !(4096..=1 << 20).contains(&grain) {
        return Err(Error::InvalidArgument(format!(
            "VMDK grain size {grain} must be a power of two from 4 KiB to 1 MiB"
        )));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.contains('"'))
        .ok_or_else(|| {
            Error::InvalidArgument("image file name must be UTF-8 without quotes".into())
        })?;
    let uuid = random_uuid();
    let mut desc = Descriptor {
        cid: u32::from_le_bytes([uuid[0], uuid[1], uuid[2], uuid[3]]),
        parent_cid: parent.as_ref().map_or(u32::MAX, |p| p.1),
        parent_hint: parent.map(|p| p.0),
        ..Default::default()
    };
    let sectors = size / SECTOR;
    if opts.fixed {
        let flat_name = match name.strip_suffix(".vmdk") {
            Some(stem) => format!("{stem}-flat.vmdk"),
            None => format!("{name}-flat"),
        };
        desc.create_type = "monolithicFlat".into();
        desc.extents.push(ExtentLine {
            writable: true,
            sectors,
            kind: ExtentKind::Flat,
            file: flat_name.clone(),
            offset: 0,
        });
        let flat = ImageFile::create(&dir_of(path).join(&flat_name), Format::Vmdk)?;
        flat.preallocate(0, size)?;
        flat.set_len(size)?;
        flat.sync_data()?;
        let file = ImageFile::create(path, Format::Vmdk)?;
        file.write_all_at(desc.render(sectors).as_bytes(), 0)?;
        return file.sync_data();
    }
    desc.create_type = "monolithicSparse".into();
    desc.extents.push(ExtentLine {
        writable: true,
        sectors,
        kind: ExtentKind::Sparse,
        file: name.to_string(),
        offset: 0,
    });
    let (mut meta, desc_offset, desc_room) = new_sparse_layout(sectors, grain / SECTOR, false);
    let text = desc.render(sectors);
    if text.len() as u64 > desc_room {
        return Err(Error::InvalidArgument(
            "descriptor does not fit in the embedded descriptor area".into(),
        ));
    }
    meta[desc_offset as usize..desc_offset as usize + text.len()].copy_from_slice(text.as_bytes());
    // Grain tables start out zero: leave them as holes so a fresh image stays small.
    let file = ImageFile::create(path, Format::Vmdk)?;
    for (i, chunk) in meta.chunks(4096).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            file.write_all_at(chunk, i as u64 * 4096)?;
        }
    }
    file.set_len(meta.len() as u64)?;
    file.sync_data()
}

/// The CID of the VMDK at `path` (its descriptor, embedded or separate).
fn parent_cid(path: &Path) -> Result<u32> {
    let img = VmdkImage::open(path, true, true)?;
    if img.descriptor_file.is_some() {
        let text = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        return Descriptor::parse(&text)
            .map(|d| d.cid)
            .map_err(|e| super::corrupt(path, e));
    }
    for p in &img.pieces {
        if let super::Storage::Sparse(s) = &p.storage {
            if let Some(text) = s.embedded_descriptor()? {
                return Descriptor::parse(&text)
                    .map(|d| d.cid)
                    .map_err(|e| super::corrupt(path, e));
            }
        }
    }
    Ok(0xffff_fffe)
}
