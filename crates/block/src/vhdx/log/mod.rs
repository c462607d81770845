//! The VHDX metadata log: finding the active sequence of valid entries and replaying it.
//!
//! Entries are checked with CRC-32C, the log GUID and their sequence numbers (in the entry
//! header, every descriptor and every data sector). The active sequence is the chain of
//! consecutive entries ending at the entry with the highest sequence number whose tail
//! field points into that chain.
//!
//! The log is hostile input of up to 256 MiB, so the scan is linear in its size: each
//! sector is checked in O(1) before anything is checksummed, entries that pass those
//! checks are disjoint (see [`entry`]) so each byte is checksummed at most once, and
//! chains are walked once from their first entry. The work is counted and capped, so a
//! mistake in that reasoning shows up as an error, not as a hang.

mod entry;

use std::collections::{BTreeMap, HashSet};

use super::headers::Guid;
use crate::image_file::ImageFile;
use crate::Result;
#[cfg(test)]
pub(crate) use entry::encode_entry;
use entry::{parse_entry, Entry, Ring, Work, LOG_SECTOR};

/// Largest log vessel replays (qemu creates 1 MiB logs).
const MAX_LOG_LENGTH: u32 = 256 << 20;
/// Work allowed per log sector: checks (an entry header, up to 128 descriptors and the
/// data sector headers they name, with room to spare) and checksummed bytes (each
/// sector once, with room to spare).
const CHECKS_PER_SECTOR: u64 = 512;
const HASHED_PER_SECTOR: u64 = 2 * LOG_SECTOR as u64;

/// One write the log asks for: data (`Some`) or zeroes (`None`) at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogWrite {
    pub offset: u64,
    pub len: u64,
    pub data: Option<Vec<u8>>,
}

/// What replaying the log does to the file.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub writes: Vec<LogWrite>,
    pub flushed_file_offset: u64,
    pub last_file_offset: u64,
    pub entries: usize,
}

/// The work limit of a scan was reached.
#[derive(Debug)]
struct OverLimit;

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
    if !(length as usize).is_multiple_of(LOG_SECTOR) {
        return Err(file.corrupt(format!(
            "log length {length} is not a multiple of {LOG_SECTOR}"
        )));
    }
    let mut log = vec![0u8; length as usize];
    file.read_exact_at(&mut log, offset, "log")?;
    let sectors = (log.len() / LOG_SECTOR) as u64;
    let limit = Work {
        checks: sectors * CHECKS_PER_SECTOR,
        hashed: sectors * HASHED_PER_SECTOR,
    };
    let mut work = Work::default();
    scan(&log, log_guid, limit, &mut work).map_err(|OverLimit| {
        file.corrupt(format!(
            "log scan exceeded its work limit ({} checks, {} bytes checksummed)",
            work.checks, work.hashed
        ))
    })
}

/// Find the active sequence of `log` (a non-empty multiple of [`LOG_SECTOR`] bytes),
/// counting the work in `work` and failing when it exceeds `limit`.
fn scan(
    log: &[u8],
    log_guid: &Guid,
    limit: Work,
    work: &mut Work,
) -> std::result::Result<Option<Replay>, OverLimit> {
    let ring = Ring(log);
    let mut entries = BTreeMap::new();
    let mut pos = 0;
    while pos < log.len() {
        match parse_entry(ring, pos, log_guid, work) {
            // No valid entry starts inside a valid one: skip over it.
            Some(e) => {
                let next = pos + e.length;
                entries.insert(pos, e);
                pos = next;
            }
            None => pos += LOG_SECTOR,
        }
        if work.checks > limit.checks || work.hashed > limit.hashed {
            return Err(OverLimit);
        }
    }
    let replay = active_sequence(&entries, log.len())?.map(|sequence| {
        let mut replay = Replay::default();
        for p in &sequence {
            let e = &entries[p];
            replay.writes.extend(e.writes.iter().cloned());
            replay.flushed_file_offset = e.flushed_file_offset;
            replay.last_file_offset = e.last_file_offset;
        }
        replay.entries = sequence.len();
        replay
    });
    Ok(replay)
}

/// The positions of the active sequence among `entries` (by position in a log of
/// `log_len` bytes): of the chains of consecutive entries whose last entry's tail points
/// into the chain, the one whose last entry has the highest sequence number, from that
/// tail on.
fn active_sequence(
    entries: &BTreeMap<usize, Entry>,
    log_len: usize,
) -> std::result::Result<Option<Vec<usize>>, OverLimit> {
    let next = |pos: usize| {
        let e = &entries[&pos];
        let n = (pos + e.length) % log_len;
        entries
            .get(&n)
            .filter(|ne| n != pos && ne.sequence == e.sequence.wrapping_add(1))
            .map(|_| n)
    };
    let followed: HashSet<usize> = entries.keys().filter_map(|&p| next(p)).collect();
    let mut best: Option<(u64, Vec<usize>)> = None;
    let mut steps = 0;
    // Sequence numbers rise along a chain, so chains have no cycles and each one is
    // walked once from its first entry.
    for &start in entries.keys().filter(|p| !followed.contains(p)) {
        let mut chain = vec![start];
        while let Some(n) = next(chain[chain.len() - 1]) {
            steps += 1;
            if steps > entries.len() {
                return Err(OverLimit);
            }
            chain.push(n);
        }
        let head = &entries[&chain[chain.len() - 1]];
        if let Some(t) = chain.iter().position(|&p| p == head.tail) {
            if best.as_ref().is_none_or(|(seq, _)| head.sequence > *seq) {
                best = Some((head.sequence, chain.split_off(t)));
            }
        }
    }
    Ok(best.map(|(_, chain)| chain))
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

#[cfg(test)]
mod tests;
