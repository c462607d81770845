//! One VHDX log entry: structural checks, checksum and decoding, done in place in the log.
//!
//! Every check that costs O(1) per sector runs before the checksum, and nothing is copied
//! before the checksum holds. The structural checks also make entries that pass them
//! disjoint: every sector of an entry but the first starts with a descriptor (`desc`,
//! `zero`) or a data sector signature (`data`), never with an entry signature (`loge`),
//! so an entry that passes cannot start inside another one that passes. The scan relies
//! on this to checksum each byte of the log at most once.

use super::super::crc32c::Crc32c;
use super::super::headers::Guid;
use super::LogWrite;
use crate::image_file::{le_u32, le_u64};

pub(crate) const LOG_SECTOR: usize = 4096;
/// Size of the entry header at the start of an entry's first sector.
const HEADER_BYTES: usize = 64;
const DESCRIPTOR_BYTES: usize = 32;

/// Work done by a log scan, counted to cap it and to test that it stays linear.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Work {
    /// Entry headers, descriptors and data sector headers checked.
    pub checks: u64,
    /// Bytes run through CRC-32C.
    pub hashed: u64,
}

/// A validated log entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub sequence: u64,
    pub length: usize,
    pub tail: usize,
    pub flushed_file_offset: u64,
    pub last_file_offset: u64,
    pub writes: Vec<LogWrite>,
}

/// The log region as a circular buffer of 4 KiB sectors (its length is a non-zero
/// multiple of [`LOG_SECTOR`]).
#[derive(Clone, Copy)]
pub(crate) struct Ring<'a>(pub &'a [u8]);

impl<'a> Ring<'a> {
    fn sectors(&self) -> usize {
        self.0.len() / LOG_SECTOR
    }

    /// Sector `index` of the entry starting at byte `pos`, wrapping around the end.
    fn sector(&self, pos: usize, index: usize) -> &'a [u8] {
        let s = (pos / LOG_SECTOR + index) % self.sectors();
        &self.0[s * LOG_SECTOR..(s + 1) * LOG_SECTOR]
    }

    /// Descriptor `i` of the entry starting at `pos`: descriptors follow the entry
    /// header and never straddle sectors.
    fn descriptor(&self, pos: usize, i: usize) -> &'a [u8] {
        let byte = HEADER_BYTES + i * DESCRIPTOR_BYTES;
        let s = self.sector(pos, byte / LOG_SECTOR);
        &s[byte % LOG_SECTOR..byte % LOG_SECTOR + DESCRIPTOR_BYTES]
    }
}

/// What a descriptor asks for, with its data left in the log until the checksum holds.
enum Planned {
    Zero {
        offset: u64,
        len: u64,
    },
    Data {
        offset: u64,
        desc: usize,
        sector: usize,
    },
}

/// The fixed fields of an entry header that passed its checks.
struct Head {
    sequence: u64,
    sectors: usize,
    tail: usize,
    count: usize,
    desc_sectors: usize,
}

fn check_head(ring: Ring, pos: usize, log_guid: &Guid) -> Option<Head> {
    let head = ring.sector(pos, 0);
    if &head[..4] != b"loge" || &head[32..48] != log_guid {
        return None;
    }
    let length = le_u32(head, 8) as usize;
    if length == 0 || !length.is_multiple_of(LOG_SECTOR) || length > ring.0.len() {
        return None;
    }
    let tail = le_u32(head, 12) as usize;
    if !tail.is_multiple_of(LOG_SECTOR) || tail >= ring.0.len() {
        return None;
    }
    let count = le_u32(head, 24) as usize;
    let desc_sectors = (HEADER_BYTES + count.checked_mul(DESCRIPTOR_BYTES)?).div_ceil(LOG_SECTOR);
    let sectors = length / LOG_SECTOR;
    if desc_sectors > sectors {
        return None;
    }
    Some(Head {
        sequence: le_u64(head, 16),
        sectors,
        tail,
        count,
        desc_sectors,
    })
}

/// Check every descriptor and data sector header of the entry at `pos`, stopping at the
/// first that fails.
fn plan_writes(ring: Ring, pos: usize, h: &Head, work: &mut Work) -> Option<Vec<Planned>> {
    let mut plan = Vec::new();
    let mut data_sector = h.desc_sectors;
    for i in 0..h.count {
        work.checks += 1;
        let d = ring.descriptor(pos, i);
        let offset = le_u64(d, 16);
        if le_u64(d, 24) != h.sequence || !offset.is_multiple_of(LOG_SECTOR as u64) {
            return None;
        }
        match &d[..4] {
            b"zero" => {
                let len = le_u64(d, 8);
                if !len.is_multiple_of(LOG_SECTOR as u64) || offset.checked_add(len).is_none() {
                    return None;
                }
                plan.push(Planned::Zero { offset, len });
            }
            b"desc" => {
                if data_sector >= h.sectors {
                    return None;
                }
                work.checks += 1;
                let s = ring.sector(pos, data_sector);
                if &s[..4] != b"data"
                    || u64::from(le_u32(s, 4)) != h.sequence >> 32
                    || u64::from(le_u32(s, 4092)) != h.sequence & 0xffff_ffff
                {
                    return None;
                }
                plan.push(Planned::Data {
                    offset,
                    desc: i,
                    sector: data_sector,
                });
                data_sector += 1;
            }
            _ => return None,
        }
    }
    (data_sector == h.sectors).then_some(plan)
}

/// The checksum stored in the entry at `pos` matches its content.
fn checksum_holds(ring: Ring, pos: usize, sectors: usize, work: &mut Work) -> bool {
    let head = ring.sector(pos, 0);
    let mut crc = Crc32c::new();
    crc.update(&head[..4]);
    crc.update(&[0; 4]);
    crc.update(&head[8..]);
    for i in 1..sectors {
        crc.update(ring.sector(pos, i));
    }
    work.hashed += (sectors * LOG_SECTOR) as u64;
    crc.finish() == le_u32(head, 4)
}

/// The entry starting at byte `pos` of the log, if it is valid.
pub(crate) fn parse_entry(
    ring: Ring,
    pos: usize,
    log_guid: &Guid,
    work: &mut Work,
) -> Option<Entry> {
    work.checks += 1;
    let h = check_head(ring, pos, log_guid)?;
    let plan = plan_writes(ring, pos, &h, work)?;
    if !checksum_holds(ring, pos, h.sectors, work) {
        return None;
    }
    let writes = plan
        .into_iter()
        .map(|p| match p {
            Planned::Zero { offset, len } => LogWrite {
                offset,
                len,
                data: None,
            },
            Planned::Data {
                offset,
                desc,
                sector,
            } => {
                // The descriptor holds the first 8 and the last 4 bytes of the sector,
                // whose own places in the data sector hold its signature and sequence.
                let d = ring.descriptor(pos, desc);
                let s = ring.sector(pos, sector);
                let mut data = Vec::with_capacity(LOG_SECTOR);
                data.extend_from_slice(&d[8..16]);
                data.extend_from_slice(&s[8..4092]);
                data.extend_from_slice(&d[4..8]);
                LogWrite {
                    offset,
                    len: LOG_SECTOR as u64,
                    data: Some(data),
                }
            }
        })
        .collect();
    let head = ring.sector(pos, 0);
    Some(Entry {
        sequence: h.sequence,
        length: h.sectors * LOG_SECTOR,
        tail: h.tail,
        flushed_file_offset: le_u64(head, 48),
        last_file_offset: le_u64(head, 56),
        writes,
    })
}

/// Encode one log entry (test helper and reference for the format): `writes` are
/// 4 KiB-aligned 4 KiB data writes.
#[cfg(test)]
pub(crate) fn encode_entry(
    sequence: u64,
    log_guid: &Guid,
    tail: u32,
    writes: &[(u64, [u8; LOG_SECTOR])],
    zeroes: &[(u64, u64)],
    (flushed_file_offset, last_file_offset): (u64, u64),
) -> Vec<u8> {
    let count = writes.len() + zeroes.len();
    let desc_sectors = (64 + count * 32).div_ceil(LOG_SECTOR);
    let mut e = vec![0u8; (desc_sectors + writes.len()) * LOG_SECTOR];
    let len = e.len() as u32;
    e[..4].copy_from_slice(b"loge");
    e[8..12].copy_from_slice(&len.to_le_bytes());
    e[12..16].copy_from_slice(&tail.to_le_bytes());
    e[16..24].copy_from_slice(&sequence.to_le_bytes());
    e[24..28].copy_from_slice(&(count as u32).to_le_bytes());
    e[32..48].copy_from_slice(log_guid);
    e[48..56].copy_from_slice(&flushed_file_offset.to_le_bytes());
    e[56..64].copy_from_slice(&last_file_offset.to_le_bytes());
    for (i, (off, len)) in zeroes.iter().enumerate() {
        let d = &mut e[64 + i * 32..96 + i * 32];
        d[..4].copy_from_slice(b"zero");
        d[8..16].copy_from_slice(&len.to_le_bytes());
        d[16..24].copy_from_slice(&off.to_le_bytes());
        d[24..32].copy_from_slice(&sequence.to_le_bytes());
    }
    for (i, (off, data)) in writes.iter().enumerate() {
        let j = zeroes.len() + i;
        let d = &mut e[64 + j * 32..96 + j * 32];
        d[..4].copy_from_slice(b"desc");
        d[4..8].copy_from_slice(&data[4092..]);
        d[8..16].copy_from_slice(&data[..8]);
        d[16..24].copy_from_slice(&off.to_le_bytes());
        d[24..32].copy_from_slice(&sequence.to_le_bytes());
        let s = &mut e[(desc_sectors + i) * LOG_SECTOR..(desc_sectors + i + 1) * LOG_SECTOR];
        s[..4].copy_from_slice(b"data");
        s[4..8].copy_from_slice(&((sequence >> 32) as u32).to_le_bytes());
        s[8..4092].copy_from_slice(&data[8..4092]);
        s[4092..].copy_from_slice(&(sequence as u32).to_le_bytes());
    }
    let sum = super::super::crc32c::crc32c_skipping(&e, None);
    e[4..8].copy_from_slice(&sum.to_le_bytes());
    e
}
