//! The VHDX header section: file identifier, the two headers and the two region tables.

use super::crc32c::crc32c_skipping;
use super::log::Patched;
use crate::image_file::{le_u16, le_u32, le_u64, ImageFile};
use crate::Result;

pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
pub(crate) const REGION_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
pub(crate) const HEADER_SIZE: usize = 4096;
pub(crate) const REGION_TABLE_SIZE: usize = 64 << 10;
const MAX_REGIONS: u32 = 2047;

/// A GUID in its on-disk byte order.
pub(crate) type Guid = [u8; 16];

/// Parse "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" into on-disk (mixed-endian) bytes.
const fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

pub(crate) const fn guid(s: &str) -> Guid {
    let b = s.as_bytes();
    // Positions of the 16 bytes in the text, in text order.
    let pos = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut text = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        text[i] = hex(b[pos[i]]) << 4 | hex(b[pos[i] + 1]);
        i += 1;
    }
    [
        text[3], text[2], text[1], text[0], text[5], text[4], text[7], text[6], text[8], text[9],
        text[10], text[11], text[12], text[13], text[14], text[15],
    ]
}

pub(crate) const BAT_REGION: Guid = guid("2DC27766-F623-4200-9D64-115E9BFD4A08");
pub(crate) const METADATA_REGION: Guid = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E");

/// One VHDX header.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub sequence: u64,
    pub file_write_guid: Guid,
    pub data_write_guid: Guid,
    pub log_guid: Guid,
    pub log_length: u32,
    pub log_offset: u64,
}

impl Header {
    fn parse(raw: &[u8]) -> std::result::Result<Header, String> {
        if &raw[..4] != b"head" {
            return Err("no \"head\" signature".into());
        }
        let stored = le_u32(raw, 4);
        let computed = crc32c_skipping(raw, Some(4));
        if stored != computed {
            return Err(format!(
                "checksum {stored:#010x} does not match {computed:#010x}"
            ));
        }
        let g = |o: usize| -> Guid { raw[o..o + 16].try_into().unwrap_or([0; 16]) };
        let h = Header {
            sequence: le_u64(raw, 8),
            file_write_guid: g(16),
            data_write_guid: g(32),
            log_guid: g(48),
            log_length: le_u32(raw, 68),
            log_offset: le_u64(raw, 72),
        };
        if le_u16(raw, 64) != 0 || le_u16(raw, 66) != 1 {
            return Err(format!(
                "log version {} / version {}",
                le_u16(raw, 64),
                le_u16(raw, 66)
            ));
        }
        Ok(h)
    }

    /// The 4 KiB on-disk form, checksummed.
    pub(crate) fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut raw = [0u8; HEADER_SIZE];
        raw[..4].copy_from_slice(b"head");
        raw[8..16].copy_from_slice(&self.sequence.to_le_bytes());
        raw[16..32].copy_from_slice(&self.file_write_guid);
        raw[32..48].copy_from_slice(&self.data_write_guid);
        raw[48..64].copy_from_slice(&self.log_guid);
        raw[66..68].copy_from_slice(&1u16.to_le_bytes());
        raw[68..72].copy_from_slice(&self.log_length.to_le_bytes());
        raw[72..80].copy_from_slice(&self.log_offset.to_le_bytes());
        let sum = crc32c_skipping(&raw, None);
        raw[4..8].copy_from_slice(&sum.to_le_bytes());
        raw
    }
}

/// Read both headers and return the current one (the valid one with the larger sequence
/// number) and its slot.
pub(crate) fn read_current_header(file: &ImageFile) -> Result<(Header, usize)> {
    let mut sig = [0u8; 8];
    file.read_exact_at(&mut sig, 0, "file identifier")?;
    if &sig != b"vhdxfile" {
        return Err(file.corrupt("no \"vhdxfile\" signature"));
    }
    let mut best: Option<(Header, usize)> = None;
    let mut errors = Vec::new();
    for (slot, &off) in HEADER_OFFSETS.iter().enumerate() {
        let mut raw = [0u8; HEADER_SIZE];
        file.read_exact_at(&mut raw, off, "header")?;
        match Header::parse(&raw) {
            Ok(h) => {
                if best.as_ref().is_none_or(|(b, _)| h.sequence > b.sequence) {
                    best = Some((h, slot));
                }
            }
            Err(e) => errors.push(format!("header {}: {e}", slot + 1)),
        }
    }
    let (h, slot) =
        best.ok_or_else(|| file.corrupt(format!("no valid header ({})", errors.join("; "))))?;
    if h.log_offset % MIB != 0
        || u64::from(h.log_length) % MIB != 0
        || (h.log_length != 0 && h.log_offset < MIB)
    {
        return Err(file.corrupt(format!(
            "bad log location {:#x}+{:#x}",
            h.log_offset, h.log_length
        )));
    }
    Ok((h, slot))
}

/// Write `h` to both header slots, the non-current one first, each with a new sequence
/// number, flushing in between so one valid header always exists.
pub(crate) fn write_headers(
    file: &ImageFile,
    h: &mut Header,
    current_slot: &mut usize,
) -> Result<()> {
    for _ in 0..2 {
        let slot = 1 - *current_slot;
        h.sequence += 1;
        file.write_all_at(&h.encode(), HEADER_OFFSETS[slot])?;
        file.sync_data()?;
        *current_slot = slot;
    }
    Ok(())
}

/// A region table entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Region {
    pub guid: Guid,
    pub offset: u64,
    pub length: u32,
    pub required: bool,
}

fn parse_region_table(raw: &[u8]) -> std::result::Result<Vec<Region>, String> {
    if &raw[..4] != b"regi" {
        return Err("no \"regi\" signature".into());
    }
    let stored = le_u32(raw, 4);
    let computed = crc32c_skipping(raw, Some(4));
    if stored != computed {
        return Err(format!(
            "checksum {stored:#010x} does not match {computed:#010x}"
        ));
    }
    let count = le_u32(raw, 8);
    if count > MAX_REGIONS {
        return Err(format!("{count} region entries"));
    }
    Ok((0..count as usize)
        .map(|i| {
            let e = &raw[16 + i * 32..16 + (i + 1) * 32];
            Region {
                guid: e[..16].try_into().unwrap_or([0; 16]),
                offset: le_u64(e, 16),
                length: le_u32(e, 24),
                required: le_u32(e, 28) & 1 != 0,
            }
        })
        .collect())
}

/// Read the region table (the second copy when the first is damaged) and validate it:
/// 1 MiB aligned regions inside the file that overlap neither each other, the header
/// section nor the log. Returns (BAT region, metadata region).
pub(crate) fn read_regions(src: &Patched<'_>, header: &Header) -> Result<(Region, Region)> {
    let file = src.file;
    let mut errors = Vec::new();
    let mut regions = None;
    for off in REGION_OFFSETS {
        let mut raw = vec![0u8; REGION_TABLE_SIZE];
        src.read_exact_at(&mut raw, off, "region table")?;
        match parse_region_table(&raw) {
            Ok(r) => {
                regions = Some(r);
                break;
            }
            Err(e) => errors.push(e),
        }
    }
    let regions = regions
        .ok_or_else(|| file.corrupt(format!("no valid region table ({})", errors.join("; "))))?;
    let file_len = file.len()?;
    let mut spans: Vec<(u64, u64, String)> = vec![(0, MIB, "header section".into())];
    if header.log_length != 0 {
        spans.push((
            header.log_offset,
            u64::from(header.log_length),
            "log".into(),
        ));
    }
    let (mut bat, mut meta) = (None, None);
    for r in &regions {
        let name = if r.guid == BAT_REGION {
            bat = Some(*r);
            "BAT"
        } else if r.guid == METADATA_REGION {
            meta = Some(*r);
            "metadata"
        } else if r.required {
            return Err(file.unsupported(format!("required region {:02x?}", r.guid)));
        } else {
            continue;
        };
        if r.offset % MIB != 0 || u64::from(r.length) % MIB != 0 || r.length == 0 {
            return Err(file.corrupt(format!(
                "{name} region {:#x}+{:#x} is not 1 MiB aligned",
                r.offset, r.length
            )));
        }
        spans.push((r.offset, u64::from(r.length), format!("{name} region")));
    }
    for (i, a) in spans.iter().enumerate() {
        if a.0.checked_add(a.1).is_none_or(|e| e > file_len) {
            return Err(file.corrupt(format!(
                "{} at {:#x}+{:#x} is past the end of the file",
                a.2, a.0, a.1
            )));
        }
        for b in &spans[i + 1..] {
            if a.0 < b.0 + b.1 && b.0 < a.0 + a.1 {
                return Err(file.corrupt(format!("{} and {} overlap", a.2, b.2)));
            }
        }
    }
    match (bat, meta) {
        (Some(b), Some(m)) => Ok((b, m)),
        _ => Err(file.corrupt("region table lacks the BAT or metadata region")),
    }
}

/// Encode a region table holding `regions`.
pub(crate) fn encode_region_table(regions: &[Region]) -> Vec<u8> {
    let mut raw = vec![0u8; REGION_TABLE_SIZE];
    raw[..4].copy_from_slice(b"regi");
    raw[8..12].copy_from_slice(&(regions.len() as u32).to_le_bytes());
    for (i, r) in regions.iter().enumerate() {
        let e = &mut raw[16 + i * 32..16 + (i + 1) * 32];
        e[..16].copy_from_slice(&r.guid);
        e[16..24].copy_from_slice(&r.offset.to_le_bytes());
        e[24..28].copy_from_slice(&r.length.to_le_bytes());
        e[28..32].copy_from_slice(&u32::from(r.required).to_le_bytes());
    }
    let sum = crc32c_skipping(&raw, None);
    raw[4..8].copy_from_slice(&sum.to_le_bytes());
    raw
}
