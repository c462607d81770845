//! Consistency check of a qcow2 file, like `qemu-img check`: recompute every cluster's
//! reference count from the header, L1/L2 tables, refcount structures and snapshots, and
//! compare with the stored refcounts. Optionally repairs leaks.

use std::fs::File;
use std::path::Path;

use super::compressed::compressed_range;
use super::header::{unsupported, Header, INCOMPAT_DIRTY, MAX_L1_BYTES, OFF_INCOMPAT};
use super::io::{decode_l2, Mapping};
use super::refcount::{get_entry, io_err, read_full, sync, write_full, Refcounts};
use super::{read_header, COPIED, L1_OFFSET_MASK};
use crate::{CheckReport, Format, Result};

/// Most clusters a check tracks (4 bytes each in memory).
const MAX_TRACKED_CLUSTERS: u64 = 1 << 26;
/// Error messages kept in the report (all are counted).
const MAX_MESSAGES: usize = 20;
/// The check stops walking tables after this many errors.
const MAX_ERRORS: u64 = 1000;

pub(crate) fn check(path: &Path, repair: bool) -> Result<CheckReport> {
    let file = crate::open::open_image_file(path, !repair)?;
    check_file(&file, path, repair)
}

struct Checker<'a> {
    file: &'a File,
    path: &'a Path,
    header: Header,
    cs: u64,
    refs: Vec<u32>,
    stored: Refcounts,
    report: CheckReport,
}

impl Checker<'_> {
    fn gave_up(&self) -> bool {
        self.report.error_count > MAX_ERRORS
    }

    fn error(&mut self, msg: String) {
        self.report.error_count += 1;
        if self.report.errors.len() < MAX_MESSAGES {
            self.report.errors.push(msg);
        }
    }

    /// Count one reference to every cluster of host range `[off, off + len)`.
    fn reference(&mut self, off: u64, len: u64, what: &str) {
        if len == 0 {
            return;
        }
        let first = off / self.cs;
        let last = off.saturating_add(len - 1) / self.cs;
        if last as usize >= self.refs.len() {
            self.error(format!(
                "{what} at {off:#x} lies beyond the end of the file"
            ));
            return;
        }
        for c in first..=last {
            let r = &mut self.refs[c as usize];
            *r = r.saturating_add(1);
        }
    }

    fn stored_refcount(&mut self, cluster: u64) -> Result<u64> {
        self.stored.get(self.file, self.path, cluster)
    }

    /// Count the references of one L1 table and the L2 tables and data it points to.
    fn walk_l1(&mut self, l1_offset: u64, l1_size: u64, active: bool) -> Result<()> {
        let cs = self.cs;
        if l1_size * 8 > MAX_L1_BYTES || l1_offset & (cs - 1) != 0 {
            self.error(format!(
                "L1 table at {l1_offset:#x} with {l1_size} entries is invalid"
            ));
            return Ok(());
        }
        self.reference(l1_offset, l1_size * 8, "L1 table");
        let mut raw = vec![0u8; (l1_size * 8) as usize];
        read_full(self.file, self.path, &mut raw, l1_offset)?;
        let mut l2 = vec![0u8; cs as usize];
        let mut loaded = None;
        for (i, chunk) in raw.chunks_exact(8).enumerate() {
            if self.gave_up() {
                return Ok(());
            }
            let entry = u64::from_be_bytes(chunk.try_into().unwrap_or([0; 8]));
            let l2_off = entry & L1_OFFSET_MASK;
            if l2_off == 0 {
                continue;
            }
            if l2_off & (cs - 1) != 0 {
                self.error(format!("L1 entry {i}: L2 offset {l2_off:#x} unaligned"));
                continue;
            }
            if l2_off / cs >= self.refs.len() as u64 {
                self.error(format!(
                    "L1 entry {i}: L2 table {l2_off:#x} beyond the end of the file"
                ));
                continue;
            }
            self.reference(l2_off, cs, "L2 table");
            if active {
                let rc = self.stored_refcount(l2_off / cs)?;
                if (rc == 1) != (entry & COPIED != 0) {
                    self.error(format!(
                        "L1 entry {i}: COPIED flag does not match L2 table refcount {rc}"
                    ));
                }
            }
            if loaded != Some(l2_off) {
                read_full(self.file, self.path, &mut l2, l2_off)?;
                loaded = Some(l2_off);
            }
            for (j, chunk) in l2.chunks_exact(8).enumerate() {
                let e = u64::from_be_bytes(chunk.try_into().unwrap_or([0; 8]));
                let mapping = match decode_l2(e, self.header.version, self.header.cluster_bits) {
                    Ok(m) => m,
                    Err(reason) => {
                        self.error(format!("L2 table {l2_off:#x} entry {j}: {reason}"));
                        continue;
                    }
                };
                let (host, len) = match mapping {
                    Mapping::Unallocated | Mapping::Zero { host: 0 } => continue,
                    Mapping::Normal(h) | Mapping::Zero { host: h } => (h, cs),
                    Mapping::Compressed(e) => {
                        let (off, len) = compressed_range(e, self.header.cluster_bits);
                        if active {
                            self.report.allocated_clusters += 1;
                        }
                        self.reference(off, len, "compressed data");
                        continue;
                    }
                };
                if active {
                    self.report.allocated_clusters += 1;
                    let rc = self.stored_refcount(host / cs)?;
                    if (rc == 1) != (e & COPIED != 0) {
                        self.error(format!(
                            "data cluster {host:#x}: COPIED flag does not match refcount {rc}"
                        ));
                    }
                }
                self.reference(host, len, "data cluster");
            }
        }
        Ok(())
    }

    fn walk_snapshots(&mut self) -> Result<()> {
        let mut at = self.header.snapshots_offset;
        let start = at;
        for n in 0..self.header.nb_snapshots {
            let mut fixed = [0u8; 40];
            read_full(self.file, self.path, &mut fixed, at)?;
            let l1_offset = u64::from_be_bytes(fixed[0..8].try_into().unwrap_or([0; 8]));
            let l1_size = u32::from_be_bytes(fixed[8..12].try_into().unwrap_or([0; 4])) as u64;
            let id_len = u16::from_be_bytes([fixed[12], fixed[13]]) as u64;
            let name_len = u16::from_be_bytes([fixed[14], fixed[15]]) as u64;
            if self.gave_up() {
                return Ok(());
            }
            let extra = u32::from_be_bytes(fixed[36..40].try_into().unwrap_or([0; 4])) as u64;
            if extra > 1024 {
                self.error(format!("snapshot {n}: extra data size {extra} invalid"));
                return Ok(());
            }
            at = at.saturating_add((40 + extra + id_len + name_len).div_ceil(8) * 8);
            self.walk_l1(l1_offset, l1_size, false)?;
        }
        self.reference(start, at - start, "snapshot table");
        Ok(())
    }

    fn walk_refcount_structures(&mut self) -> Result<()> {
        let cs = self.cs;
        let h = &self.header;
        let (off, clusters) = (h.refcount_table_offset, h.refcount_table_clusters as u64);
        self.reference(off, clusters * cs, "refcount table");
        let file_len = self
            .file
            .metadata()
            .map_err(|e| io_err(self.path, e))?
            .len();
        for rbi in 0..self.stored.table.len() as u64 {
            match self.stored.block_offset(self.path, rbi) {
                Ok(Some(block)) => {
                    if block >= file_len {
                        self.error(format!(
                            "refcount block {rbi} at {block:#x} is outside the file"
                        ));
                    }
                    self.reference(block, cs, "refcount block");
                }
                Ok(None) => {}
                Err(e) => self.error(e.to_string()),
            }
        }
        Ok(())
    }

    /// Compare stored and computed refcounts; returns the leaked clusters.
    fn compare(&mut self) -> Result<Vec<(u64, u64)>> {
        let block_bits = self.stored.block_bits();
        let per_block = 1u64 << block_bits;
        let order = self.stored.order;
        // Refcounts of clusters past the end of the file are not examined.
        let end = self.refs.len() as u64;
        let mut leaks = Vec::new();
        let mut rbi = 0u64;
        while rbi * per_block < end && !self.gave_up() {
            let first = rbi * per_block;
            let last = (first + per_block).min(end);
            let block = match self.stored.block_offset(self.path, rbi) {
                Ok(Some(off)) => Some(self.stored.block_data(self.file, self.path, off)?),
                Ok(None) => None,
                Err(e) => {
                    self.error(e.to_string());
                    rbi += 1;
                    continue;
                }
            };
            for c in first..last {
                let computed = self.refs[c as usize] as u64;
                let stored = match &block {
                    Some(data) => get_entry(data, order, c - first),
                    None => 0,
                };
                if stored < computed {
                    self.error(format!(
                        "cluster {c}: refcount {stored} but {computed} references"
                    ));
                } else if stored > computed {
                    leaks.push((c, computed));
                }
            }
            rbi += 1;
        }
        Ok(leaks)
    }
}

/// Check the qcow2 image open as `file`; with `repair`, fix leaked clusters (only when
/// no corruption was found) and clear the dirty bit.
pub(crate) fn check_file(file: &File, path: &Path, repair: bool) -> Result<CheckReport> {
    let header = read_header(file, path)?;
    let cs = header.cluster_size();
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let file_clusters = file_len.div_ceil(cs);
    if file_clusters > MAX_TRACKED_CLUSTERS {
        return Err(unsupported(
            path,
            "checking images with more than 2^26 clusters",
        ));
    }
    let stored = Refcounts::load(file, path, &header, 8 << 20)?;
    let mut checker = Checker {
        file,
        path,
        cs,
        refs: vec![0u32; file_clusters as usize],
        stored,
        report: CheckReport {
            format: Some(Format::Qcow2),
            cluster_size: cs,
            total_clusters: header.size.div_ceil(cs),
            ..CheckReport::default()
        },
        header: header.clone(),
    };
    checker.reference(0, cs, "header");
    checker.walk_refcount_structures()?;
    checker.walk_l1(header.l1_table_offset, header.l1_size as u64, true)?;
    if header.nb_snapshots > 0 {
        checker.walk_snapshots()?;
    }
    let leaks = checker.compare()?;
    checker.report.leaked_clusters = leaks.len() as u64;
    if repair && checker.report.error_count == 0 {
        for &(c, computed) in &leaks {
            checker.stored.set(file, path, c, computed)?;
        }
        checker.stored.write_back(file, path)?;
        sync(file, path)?;
        checker.report.repaired_leaks = leaks.len() as u64;
        if header.version >= 3 && header.incompatible & INCOMPAT_DIRTY != 0 {
            let incompat = header.incompatible & !INCOMPAT_DIRTY;
            write_full(file, path, &incompat.to_be_bytes(), OFF_INCOMPAT)?;
            sync(file, path)?;
        }
    }
    Ok(checker.report)
}
