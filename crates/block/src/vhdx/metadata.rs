//! The VHDX metadata region: file parameters, virtual disk size, sector sizes, page 83
//! identifier and (for differencing disks) the parent locator.

use super::headers::{guid, Guid, Region};
use super::log::Patched;
use crate::image_file::{le_u16, le_u32, le_u64, ImageFile};
use crate::Result;

const FILE_PARAMETERS: Guid = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
const VIRTUAL_DISK_SIZE: Guid = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
const PAGE83: Guid = guid("BECA12AB-B2E6-4523-93EF-C309E000C746");
const LOGICAL_SECTOR: Guid = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
const PHYSICAL_SECTOR: Guid = guid("CDA348C7-445D-4471-9CC9-E9885251C556");
pub(crate) const PARENT_LOCATOR: Guid = guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");
/// Parent locator type of VHDX parents.
const VHDX_PARENT_TYPE: Guid = guid("B04AEFB7-D19E-4A81-B789-25B8E9445913");
const MAX_ENTRIES: u16 = 2047;
pub(crate) const MAX_DISK_SIZE: u64 = 64 << 40;
const FLAG_IS_REQUIRED: u32 = 4;
const FLAG_IS_VIRTUAL_DISK: u32 = 2;
/// Where item data starts in the metadata region (after the 64 KiB table).
const ITEMS_START: u32 = 64 << 10;

/// The metadata vessel uses.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    pub block_size: u32,
    pub leave_blocks_allocated: bool,
    pub has_parent: bool,
    pub disk_size: u64,
    pub logical_sector: u32,
    /// Key/value pairs of the parent locator (differencing disks).
    pub parent_locator: Vec<(String, String)>,
}

fn utf16le(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

fn parse_locator(file: &ImageFile, d: &[u8]) -> Result<Vec<(String, String)>> {
    if d.len() < 20 || d[..16] != VHDX_PARENT_TYPE {
        return Err(file.unsupported("parent locator of a non-VHDX type"));
    }
    let count = usize::from(le_u16(d, 18));
    if 20 + count * 12 > d.len() {
        return Err(file.corrupt("parent locator entries run past the item"));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let e = &d[20 + i * 12..32 + i * 12];
        let (ko, vo) = (le_u32(e, 0) as usize, le_u32(e, 4) as usize);
        let (kl, vl) = (usize::from(le_u16(e, 8)), usize::from(le_u16(e, 10)));
        let (Some(k), Some(v)) = (d.get(ko..ko + kl), d.get(vo..vo + vl)) else {
            return Err(file.corrupt(format!("parent locator entry {i} runs past the item")));
        };
        out.push((utf16le(k), utf16le(v)));
    }
    Ok(out)
}

/// Read and validate the metadata region.
pub(crate) fn read_metadata(src: &Patched<'_>, region: &Region) -> Result<Metadata> {
    let file = src.file;
    let mut table = vec![0u8; ITEMS_START as usize];
    src.read_exact_at(&mut table, region.offset, "metadata table")?;
    if &table[..8] != b"metadata" {
        return Err(file.corrupt("no \"metadata\" signature"));
    }
    let count = le_u16(&table, 10);
    if count > MAX_ENTRIES {
        return Err(file.corrupt(format!("{count} metadata entries")));
    }
    let mut items: Vec<(Guid, Vec<u8>)> = Vec::new();
    for i in 0..usize::from(count) {
        let e = &table[32 + i * 32..64 + i * 32];
        let id: Guid = e[..16].try_into().unwrap_or([0; 16]);
        let (offset, length, flags) = (le_u32(e, 16), le_u32(e, 20), le_u32(e, 24));
        let known = [
            FILE_PARAMETERS,
            VIRTUAL_DISK_SIZE,
            PAGE83,
            LOGICAL_SECTOR,
            PHYSICAL_SECTOR,
            PARENT_LOCATOR,
        ]
        .contains(&id);
        if !known {
            if flags & FLAG_IS_REQUIRED != 0 {
                return Err(file.unsupported(format!("required metadata item {id:02x?}")));
            }
            continue;
        }
        if length == 0 {
            continue;
        }
        if offset < ITEMS_START
            || u64::from(offset) + u64::from(length) > u64::from(region.length)
            || length > (1 << 20)
        {
            return Err(file.corrupt(format!(
                "metadata item {i} at {offset:#x}+{length:#x} is outside the region"
            )));
        }
        let mut data = vec![0u8; length as usize];
        src.read_exact_at(
            &mut data,
            region.offset + u64::from(offset),
            "metadata item",
        )?;
        items.push((id, data));
    }
    let item = |id: Guid, min: usize, name: &str| -> Result<Vec<u8>> {
        match items.iter().find(|(g, _)| *g == id) {
            Some((_, d)) if d.len() >= min => Ok(d.clone()),
            Some(_) => Err(file.corrupt(format!("metadata item {name} is too short"))),
            None => Err(file.corrupt(format!("metadata item {name} is missing"))),
        }
    };
    let params = item(FILE_PARAMETERS, 8, "file parameters")?;
    let block_size = le_u32(&params, 0);
    let flags = le_u32(&params, 4);
    if !block_size.is_power_of_two() || !(1 << 20..=256 << 20).contains(&block_size) {
        return Err(file.corrupt(format!("bad block size {block_size}")));
    }
    let logical_sector = le_u32(&item(LOGICAL_SECTOR, 4, "logical sector size")?, 0);
    let physical_sector = le_u32(&item(PHYSICAL_SECTOR, 4, "physical sector size")?, 0);
    for (name, v) in [("logical", logical_sector), ("physical", physical_sector)] {
        if v != 512 && v != 4096 {
            return Err(file.corrupt(format!("{name} sector size {v}")));
        }
    }
    let disk_size = le_u64(&item(VIRTUAL_DISK_SIZE, 8, "virtual disk size")?, 0);
    if disk_size > MAX_DISK_SIZE || !disk_size.is_multiple_of(u64::from(logical_sector)) {
        return Err(file.corrupt(format!("bad virtual disk size {disk_size}")));
    }
    let has_parent = flags & 2 != 0;
    let parent_locator = if has_parent {
        parse_locator(file, &item(PARENT_LOCATOR, 20, "parent locator")?)?
    } else {
        Vec::new()
    };
    Ok(Metadata {
        block_size,
        leave_blocks_allocated: flags & 1 != 0,
        has_parent,
        disk_size,
        logical_sector,
        parent_locator,
    })
}

/// The metadata region (1 MiB) of a new image.
pub(crate) fn encode_metadata(
    block_size: u32,
    leave_allocated: bool,
    disk_size: u64,
    disk_id: Guid,
    parent: Option<&[(String, String)]>,
) -> Vec<u8> {
    let mut r = vec![0u8; 1 << 20];
    r[..8].copy_from_slice(b"metadata");
    let flags = u32::from(leave_allocated) | if parent.is_some() { 2 } else { 0 };
    let mut items: Vec<(Guid, Vec<u8>, u32)> = vec![
        (
            FILE_PARAMETERS,
            [block_size.to_le_bytes(), flags.to_le_bytes()].concat(),
            FLAG_IS_REQUIRED,
        ),
        (
            VIRTUAL_DISK_SIZE,
            disk_size.to_le_bytes().to_vec(),
            FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK,
        ),
        (
            PAGE83,
            disk_id.to_vec(),
            FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK,
        ),
        (
            LOGICAL_SECTOR,
            512u32.to_le_bytes().to_vec(),
            FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK,
        ),
        (
            PHYSICAL_SECTOR,
            4096u32.to_le_bytes().to_vec(),
            FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK,
        ),
    ];
    if let Some(kv) = parent {
        items.push((
            PARENT_LOCATOR,
            encode_locator(kv),
            FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK,
        ));
    }
    r[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
    let mut at = ITEMS_START as usize;
    for (i, (id, data, flags)) in items.iter().enumerate() {
        let e = &mut r[32 + i * 32..64 + i * 32];
        e[..16].copy_from_slice(id);
        e[16..20].copy_from_slice(&(at as u32).to_le_bytes());
        e[20..24].copy_from_slice(&(data.len() as u32).to_le_bytes());
        e[24..28].copy_from_slice(&flags.to_le_bytes());
        r[at..at + data.len()].copy_from_slice(data);
        at += data.len().div_ceil(8) * 8;
    }
    r
}

/// The parent locator item: type, count, (key offset, value offset, key length, value
/// length) entries, then the UTF-16LE strings.
fn encode_locator(kv: &[(String, String)]) -> Vec<u8> {
    let mut d = vec![0u8; 20 + kv.len() * 12];
    d[..16].copy_from_slice(&VHDX_PARENT_TYPE);
    d[18..20].copy_from_slice(&(kv.len() as u16).to_le_bytes());
    let utf16 = |s: &str| {
        s.encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>()
    };
    for (i, (k, v)) in kv.iter().enumerate() {
        let (k, v) = (utf16(k), utf16(v));
        let ko = d.len();
        d.extend_from_slice(&k);
        let vo = d.len();
        d.extend_from_slice(&v);
        let e = &mut d[20 + i * 12..32 + i * 12];
        e[0..4].copy_from_slice(&(ko as u32).to_le_bytes());
        e[4..8].copy_from_slice(&(vo as u32).to_le_bytes());
        e[8..10].copy_from_slice(&(k.len() as u16).to_le_bytes());
        e[10..12].copy_from_slice(&(v.len() as u16).to_le_bytes());
    }
    d
}
