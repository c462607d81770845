//! The VHDX metadata log: finding the active sequence of valid entries and replaying it.
//!
//! Entries are checked with CRC-32C, the log GUID and their sequence numbers (in the entry
//! header, every descriptor and every data sector). The active sequence is the chain of
//! consecutive entries ending at the entry with the highest sequence number whose tail
//! field points into that chain.

use std::collections::HashMap;

use super::crc32c::crc32c_skipping;
use super::headers::Guid;
use crate::image_file::{le_u32, le_u64, ImageFile};
use crate::Result;

pub(crate) const LOG_SECTOR: usize = 4096;
/// Largest log vessel replays (qemu creates 1 MiB logs).
const MAX_LOG_LENGTH: u32 = 256 << 20;

/// One write the log asks for: data (`Some`) or zeroes (`None`) at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogWrite {
    pub offset: u64,
    pub len: u64,
    pub data: Option<Vec<u8>>,
}

/// A validated log entry.
#[derive(Debug, Clone)]
struct Entry {
    sequence: u64,
    length: usize,
    tail: usize,
    flushed_file_offset: u64,
    last_file_offset: u64,
    writes: Vec<LogWrite>,
}

/// What replaying the log does to the file.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub writes: Vec<LogWrite>,
    pub flushed_file_offset: u64,
    pub last_file_offset: u64,
    pub entries: usize,
}

/// `len` bytes of the circular log starting at `pos`.
fn circular(log: &[u8], pos: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut p = pos;
    while out.len() < len {
        let n = (len - out.len()).min(log.len() - p);
        out.extend_from_slice(&log[p..p + n]);
        p = (p + n) % log.len();
    }
    out
}

fn parse_entry(log: &[u8], pos: usize, log_guid: &Guid) -> Option<Entry> {
    let head = &log[pos..pos + LOG_SECTOR];
    if &head[..4] != b"loge" || &head[32..48] != log_guid {
        return None;
    }
    let length = le_u32(head, 8) as usize;
    if length == 0 || !length.is_multiple_of(LOG_SECTOR) || length > log.len() {
        return None;
    }
    let tail = le_u32(head, 12) as usize;
    if !tail.is_multiple_of(LOG_SECTOR) || tail >= log.len() {
        return None;
    }
    let sequence = le_u64(head, 16);
    let count = le_u32(head, 24) as usize;
    let desc_sectors = (64 + count.checked_mul(32)?).div_ceil(LOG_SECTOR);
    if desc_sectors > length / LOG_SECTOR {
        return None;
    }
    let entry = circular(log, pos, length);
    if le_u32(&entry, 4) != crc32c_skipping(&entry, Some(4)) {
        return None;
    }
    let mut writes = Vec::with_capacity(count);
    let mut data_sector = desc_sectors;
    for i in 0..count {
        let d = &entry[64 + i * 32..96 + i * 32];
        if le_u64(d, 24) != sequence {
            return None;
        }
        let file_offset = le_u64(d, 16);
        if !file_offset.is_multiple_of(LOG_SECTOR as u64) {
            return None;
        }
        match &d[..4] {
            b"zero" => {
                let len = le_u64(d, 8);
                if !len.is_multiple_of(LOG_SECTOR as u64) || file_offset.checked_add(len).is_none()
                {
                    return None;
                }
                writes.push(LogWrite {
                    offset: file_offset,
                    len,
                    data: None,
                });
            }
            b"desc" => {
                let s = entry.get(data_sector * LOG_SECTOR..(data_sector + 1) * LOG_SECTOR)?;
                data_sector += 1;
                if &s[..4] != b"data"
                    || u64::from(le_u32(s, 4)) != sequence >> 32
                    || u64::from(le_u32(s, 4092)) != sequence & 0xffff_ffff
                {
                    return None;
                }
                let mut data = Vec::with_capacity(LOG_SECTOR);
                data.extend_from_slice(&d[8..16]);
                data.extend_from_slice(&s[8..4092]);
                data.extend_from_slice(&d[4..8]);
                writes.push(LogWrite {
                    offset: file_offset,
                    len: LOG_SECTOR as u64,
                    data: Some(data),
                });
            }
            _ => return None,
        }
    }
    if data_sector != length / LOG_SECTOR {
        return None;
    }
    Some(Entry {
        sequence,
        length,
        tail,
        flushed_file_offset: le_u64(head, 48),
        last_file_offset: le_u64(head, 56),
        writes,
    })
}

/// Read the log at `offset` (`length` bytes) and collect the writes of its active
/// sequence. `None` when the log holds no valid sequence.
pub(crate) fn find_replay(
    file: &ImageFile,
    offset: u64,
    length: u32,
    log_guid: &Guid,
) -> Result<Option<Replay>> {
    if length == 0 {
        return Err(file.corrupt("the header names a log but the log is empty"));
    }
    if length > MAX_LOG_LENGTH {
        return Err(file.unsupported(format!("log of {length} bytes")));
    }
    let mut log = vec![0u8; length as usize];
    file.read_exact_at(&mut log, offset, "log")?;
    let entries: HashMap<usize, Entry> = (0..log.len())
        .step_by(LOG_SECTOR)
        .filter_map(|p| parse_entry(&log, p, log_guid).map(|e| (p, e)))
        .collect();
    let mut best: Option<Vec<usize>> = None;
    let mut best_seq = 0;
    for &start in entries.keys() {
        // Follow the chain of consecutive entries from `start`.
        let mut chain = vec![start];
        let mut pos = start;
        loop {
            let e = &entries[&pos];
            let next = (pos + e.length) % log.len();
            match entries.get(&next) {
                Some(n) if n.sequence == e.sequence.wrapping_add(1) && !chain.contains(&next) => {
                    chain.push(next);
                    pos = next;
                }
                _ => break,
            }
        }
        let head = &entries[chain.last().unwrap_or(&start)];
        if let Some(t) = chain.iter().position(|&p| p == head.tail) {
            if best.is_none() || head.sequence > best_seq {
                best_seq = head.sequence;
                best = Some(chain[t..].to_vec());
            }
        }
    }
    let Some(sequence) = best else {
        return Ok(None);
    };
    let mut replay = Replay::default();
    for p in &sequence {
        let e = &entries[p];
        replay.writes.extend(e.writes.iter().cloned());
        replay.flushed_file_offset = e.flushed_file_offset;
        replay.last_file_offset = e.last_file_offset;
    }
    replay.entries = sequence.len();
    Ok(Some(replay))
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
    let sum = crc32c_skipping(&e, None);
    e[4..8].copy_from_slice(&sum.to_le_bytes());
    e
}

/// The image file seen through log writes not yet replayed into it (read-only opens).
pub(crate) struct Patched<'a> {
    pub file: &'a ImageFile,
    pub writes: &'a [LogWrite],
}

impl Patched<'_> {
    /// Read like [`ImageFile::read_exact_at`], then apply the pending log writes.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
        self.file.read_exact_at(buf, offset, what)?;
        apply(self.writes, buf, offset);
        Ok(())
    }
}

/// Apply log writes, in order, to `buf` holding the file bytes at `offset`.
pub(crate) fn apply(writes: &[LogWrite], buf: &mut [u8], offset: u64) {
    let end = offset + buf.len() as u64;
    for w in writes {
        let (from, to) = (
            w.offset.max(offset),
            (w.offset.saturating_add(w.len)).min(end),
        );
        if from >= to {
            continue;
        }
        let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
        match &w.data {
            Some(d) => {
                dst.copy_from_slice(&d[(from - w.offset) as usize..(to - w.offset) as usize])
            }
            None => dst.fill(0),
        }
    }
}
