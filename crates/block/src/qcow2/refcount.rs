//! Refcounts: the refcount table, a cache of refcount blocks, and cluster allocation.
//!
//! Allocation appends at the end of the file. Refcount increments are made before the
//! clusters are referenced; refcount blocks are written back before any L2 table (see
//! `Qcow2::flush_metadata`), so a crash can leak clusters but never leave a reference to a
//! cluster whose refcount is zero.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::cache::{Entry, TableCache};
use super::header::{corrupt, Header, MAX_REFTABLE_BYTES, OFF_REFTABLE};
use super::Qcow2;
use crate::{Error, Result};

/// Most in-use clusters allocation skips over past the end of the file before giving up.
const MAX_SKIPPED_CLUSTERS: u64 = 1 << 20;
/// Bits 0-8 of a refcount table entry are reserved.
const REFTABLE_OFFSET_MASK: u64 = !0x1ff;

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Read `buf.len()` bytes at `offset`; bytes past the end of the file read as zeroes.
pub(crate) fn read_full(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(path, e)),
        }
    }
    Ok(())
}

pub(crate) fn write_full(file: &File, path: &Path, buf: &[u8], offset: u64) -> Result<()> {
    file.write_all_at(buf, offset).map_err(|e| io_err(path, e))
}

pub(crate) fn sync(file: &File, path: &Path) -> Result<()> {
    file.sync_data().map_err(|e| io_err(path, e))
}

/// Refcount of entry `idx` in a refcount block with `1 << order`-bit entries.
pub(crate) fn get_entry(block: &[u8], order: u32, idx: u64) -> u64 {
    let bits = 1u64 << order;
    if bits < 8 {
        let byte = block[(idx * bits / 8) as usize];
        let shift = (idx * bits) % 8;
        return ((byte >> shift) as u64) & ((1 << bits) - 1);
    }
    let bytes = (bits / 8) as usize;
    let at = idx as usize * bytes;
    block[at..at + bytes]
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | b as u64)
}

pub(crate) fn set_entry(block: &mut [u8], order: u32, idx: u64, value: u64) {
    let bits = 1u64 << order;
    if bits < 8 {
        let at = (idx * bits / 8) as usize;
        let shift = (idx * bits) % 8;
        let mask = (((1u64 << bits) - 1) << shift) as u8;
        block[at] = (block[at] & !mask) | (((value << shift) as u8) & mask);
        return;
    }
    let bytes = (bits / 8) as usize;
    let at = idx as usize * bytes;
    for (i, b) in block[at..at + bytes].iter_mut().enumerate() {
        *b = (value >> (8 * (bytes - 1 - i))) as u8;
    }
}

/// The refcount table and a cache of refcount blocks.
pub(crate) struct Refcounts {
    pub order: u32,
    pub cluster_bits: u32,
    pub table: Vec<u64>,
    pub table_offset: u64,
    pub table_clusters: u64,
    cache: TableCache<Vec<u8>>,
}

impl Refcounts {
    pub fn load(file: &File, path: &Path, h: &Header, cache_bytes: u64) -> Result<Refcounts> {
        let cs = h.cluster_size();
        let bytes = h.refcount_table_clusters as u64 * cs;
        // Bounded by the header validation (MAX_REFTABLE_BYTES) and the chain's budget.
        crate::budget::charge(path, "refcount table", bytes)?;
        let mut raw = vec![0u8; bytes as usize];
        read_full(file, path, &mut raw, h.refcount_table_offset)?;
        let table = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Ok(Refcounts {
            order: h.refcount_order,
            cluster_bits: h.cluster_bits,
            table,
            table_offset: h.refcount_table_offset,
            table_clusters: h.refcount_table_clusters as u64,
            cache: TableCache::new((cache_bytes >> h.cluster_bits).max(4) as usize),
        })
    }

    /// Shrink the block cache (tests exercise eviction with it).
    #[cfg(test)]
    pub fn set_cache_capacity(&mut self, blocks: usize) {
        self.cache = TableCache::new(blocks);
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// log2 of the number of refcounts in one block.
    pub fn block_bits(&self) -> u32 {
        self.cluster_bits + 3 - self.order
    }

    pub fn max_value(&self) -> u64 {
        if self.order == 6 {
            u64::MAX
        } else {
            (1u64 << (1u64 << self.order)) - 1
        }
    }

    /// Offset of refcount block `rbi`, `None` when unallocated or beyond the table.
    pub fn block_offset(&self, path: &Path, rbi: u64) -> Result<Option<u64>> {
        let Some(&entry) = self.table.get(rbi as usize) else {
            return Ok(None);
        };
        let off = entry & REFTABLE_OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        if off & (self.cluster_size() - 1) != 0 {
            return Err(corrupt(
                path,
                format!("refcount block offset {off:#x} unaligned"),
            ));
        }
        Ok(Some(off))
    }

    fn load_block(&mut self, file: &File, path: &Path, off: u64) -> Result<&mut Entry<Vec<u8>>> {
        if self.cache.get(off).is_none() {
            if self.cache.is_full() {
                if let Some(old) = self.cache.pop_lru() {
                    if old.dirty {
                        write_full(file, path, &old.data, old.offset)?;
                    }
                }
            }
            let mut data = vec![0u8; self.cluster_size() as usize];
            read_full(file, path, &mut data, off)?;
            self.cache.insert(off, data, false);
        }
        self.cache
            .get(off)
            .ok_or_else(|| corrupt(path, "refcount cache lost an entry"))
    }

    /// A copy of the refcount block at `off`.
    pub fn block_data(&mut self, file: &File, path: &Path, off: u64) -> Result<Vec<u8>> {
        Ok(self.load_block(file, path, off)?.data.clone())
    }

    /// Refcount of host cluster `cluster` (0 when its block is unallocated).
    pub fn get(&mut self, file: &File, path: &Path, cluster: u64) -> Result<u64> {
        let rbi = cluster >> self.block_bits();
        let Some(off) = self.block_offset(path, rbi)? else {
            return Ok(0);
        };
        let idx = cluster & ((1 << self.block_bits()) - 1);
        let order = self.order;
        let block = self.load_block(file, path, off)?;
        Ok(get_entry(&block.data, order, idx))
    }

    /// Set the refcount of `cluster`, whose refcount block must exist.
    pub fn set(&mut self, file: &File, path: &Path, cluster: u64, value: u64) -> Result<()> {
        let rbi = cluster >> self.block_bits();
        let Some(off) = self.block_offset(path, rbi)? else {
            return Err(corrupt(path, "refcount block missing"));
        };
        if value > self.max_value() {
            return Err(corrupt(
                path,
                format!("refcount of cluster {cluster} overflows"),
            ));
        }
        let idx = cluster & ((1 << self.block_bits()) - 1);
        let order = self.order;
        let block = self.load_block(file, path, off)?;
        set_entry(&mut block.data, order, idx, value);
        block.dirty = true;
        Ok(())
    }

    /// Put a freshly written block into the cache.
    pub fn insert_block(
        &mut self,
        file: &File,
        path: &Path,
        off: u64,
        data: Vec<u8>,
    ) -> Result<()> {
        if self.cache.get(off).is_some() {
            return Err(corrupt(
                path,
                format!("cluster {off:#x} is in use as a refcount block but has no refcount"),
            ));
        }
        if self.cache.is_full() {
            if let Some(old) = self.cache.pop_lru() {
                if old.dirty {
                    write_full(file, path, &old.data, old.offset)?;
                }
            }
        }
        self.cache.insert(off, data, false);
        Ok(())
    }

    /// Write every dirty refcount block; returns whether anything was written.
    pub fn write_back(&mut self, file: &File, path: &Path) -> Result<bool> {
        let mut wrote = false;
        for entry in self.cache.dirty_entries() {
            write_full(file, path, &entry.data, entry.offset)?;
            entry.dirty = false;
            wrote = true;
        }
        Ok(wrote)
    }

    fn table_bytes(&self) -> Vec<u8> {
        self.table.iter().flat_map(|e| e.to_be_bytes()).collect()
    }
}

impl Qcow2 {
    /// Reserve `n` contiguous new clusters at the end of the file, with refcount 1.
    /// Returns the host offset of the first.
    pub(super) fn alloc_clusters(&mut self, n: u64) -> Result<u64> {
        let mut start = self.skip_used()?;
        while let Some(k) = self.first_used(start, n)? {
            self.next_cluster = start + k + 1;
            start = self.skip_used()?;
        }
        self.next_cluster = start + n;
        for c in start..start + n {
            self.add_refcount(c, 1)?;
        }
        Ok(start << self.cluster_bits)
    }

    /// Index within `[start, start + n)` of the first cluster with a nonzero refcount.
    fn first_used(&mut self, start: u64, n: u64) -> Result<Option<u64>> {
        for k in 0..n {
            if self.rc.get(&self.file, &self.path, start + k)? != 0 {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }

    /// Advance the allocation point past clusters that already have a refcount (leaked
    /// beyond the end of the file by a crash); returns it.
    fn skip_used(&mut self) -> Result<u64> {
        let mut skipped = 0u64;
        while self.rc.get(&self.file, &self.path, self.next_cluster)? != 0 {
            self.next_cluster += 1;
            skipped += 1;
            if skipped > MAX_SKIPPED_CLUSTERS {
                return Err(corrupt(
                    &self.path,
                    "refcounts claim a long run of clusters past the end of the file",
                ));
            }
        }
        Ok(self.next_cluster)
    }

    /// Add `delta` to the refcount of host cluster `cluster`, creating its refcount block
    /// (and growing the refcount table) when needed.
    pub(super) fn add_refcount(&mut self, cluster: u64, delta: i64) -> Result<()> {
        self.ensure_block(cluster >> self.rc.block_bits(), 0)?;
        let old = self.rc.get(&self.file, &self.path, cluster)?;
        let new = if delta >= 0 {
            old.checked_add(delta as u64)
        } else {
            old.checked_sub(delta.unsigned_abs())
        };
        let Some(new) = new else {
            return Err(corrupt(
                &self.path,
                format!("refcount of cluster {cluster} would go below zero"),
            ));
        };
        self.rc.set(&self.file, &self.path, cluster, new)
    }

    /// Make refcount block `rbi` exist, allocating it at the end of the file.
    fn ensure_block(&mut self, rbi: u64, depth: u32) -> Result<()> {
        if depth > 4 {
            return Err(corrupt(
                &self.path,
                "refcount block allocation does not converge",
            ));
        }
        if rbi as usize >= self.rc.table.len() {
            self.grow_table(rbi)?;
        }
        if self.rc.block_offset(&self.path, rbi)?.is_some() {
            return Ok(());
        }
        let host = self.skip_used()?;
        let host_rbi = host >> self.rc.block_bits();
        if host_rbi != rbi {
            // The new block's own refcount lives in another block: make that one first.
            self.ensure_block(host_rbi, depth + 1)?;
            if self.rc.block_offset(&self.path, rbi)?.is_some() {
                return Ok(());
            }
        }
        let host = self.skip_used()?;
        self.next_cluster += 1;
        let cs = self.cs;
        let mut block = vec![0u8; cs as usize];
        let self_ref = host >> self.rc.block_bits() == rbi;
        if self_ref {
            let idx = host & ((1 << self.rc.block_bits()) - 1);
            set_entry(&mut block, self.rc.order, idx, 1);
        }
        // Block content must be durable before the table entry that makes it live.
        write_full(&self.file, &self.path, &block, host * cs)?;
        sync(&self.file, &self.path)?;
        self.note_metadata(host * cs);
        self.rc.table[rbi as usize] = host * cs;
        let entry = (host * cs).to_be_bytes();
        write_full(
            &self.file,
            &self.path,
            &entry,
            self.rc.table_offset + rbi * 8,
        )?;
        self.rc
            .insert_block(&self.file, &self.path, host * cs, block)?;
        if !self_ref {
            self.add_refcount(host, 1)?;
        }
        Ok(())
    }

    /// Move the refcount table to a larger one at the end of the file, so that it has an
    /// entry for block `rbi`.
    fn grow_table(&mut self, rbi: u64) -> Result<()> {
        let cs = self.cs;
        let block_bits = self.rc.block_bits();
        let old_entries = self.rc.table.len() as u64;
        let mut entries = (rbi + 1).max(old_entries * 2);
        let mut clusters;
        loop {
            clusters = (entries * 8).div_ceil(cs);
            // Room for the table itself plus a few refcount blocks after it.
            let last = self.next_cluster + clusters + 8;
            let needed = (last >> block_bits) + 1;
            if needed <= entries {
                break;
            }
            entries = needed;
        }
        entries = clusters * cs / 8;
        if clusters * cs > MAX_REFTABLE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "{}: image too large for its cluster size (refcount table limit)",
                self.path.display()
            )));
        }
        let old_offset = self.rc.table_offset;
        let old_clusters = self.rc.table_clusters;
        let start = self.next_cluster;
        self.next_cluster += clusters;
        self.rc.table.resize(entries as usize, 0);
        self.rc.table_offset = start * cs;
        self.rc.table_clusters = clusters;
        // Write the table now so that entry updates below land on a complete table; the
        // header still points at the old one until the switch.
        write_full(&self.file, &self.path, &self.rc.table_bytes(), start * cs)?;
        for c in start..start + clusters {
            self.add_refcount(c, 1)?;
        }
        self.rc.write_back(&self.file, &self.path)?;
        write_full(&self.file, &self.path, &self.rc.table_bytes(), start * cs)?;
        sync(&self.file, &self.path)?;
        let mut hdr = [0u8; 12];
        hdr[..8].copy_from_slice(&(start * cs).to_be_bytes());
        hdr[8..].copy_from_slice(&(clusters as u32).to_be_bytes());
        write_full(&self.file, &self.path, &hdr, OFF_REFTABLE)?;
        sync(&self.file, &self.path)?;
        self.header.refcount_table_offset = start * cs;
        self.header.refcount_table_clusters = clusters as u32;
        let old_first = old_offset / cs;
        for c in old_first..old_first + old_clusters {
            self.add_refcount(c, -1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_every_width() {
        for order in 0..=6u32 {
            let mut block = vec![0u8; 512];
            let max = if order == 6 {
                u64::MAX
            } else {
                (1u64 << (1 << order)) - 1
            };
            let n = (512 * 8) >> order;
            for idx in 0..n {
                set_entry(&mut block, order, idx, (idx * 7) & max);
            }
            for idx in 0..n {
                assert_eq!(
                    get_entry(&block, order, idx),
                    (idx * 7) & max,
                    "order {order}"
                );
            }
        }
        let mut block = vec![0u8; 4];
        set_entry(&mut block, 4, 1, 0x1234);
        assert_eq!(block, [0, 0, 0x12, 0x34]);
    }
}
