//! Guest-visible I/O on qcow2: cluster mapping, read, write, zero, allocation map, resize.

use super::cache::Entry;
use super::compressed::{compressed_range, inflate_cluster};
use super::header::{corrupt, l1_entries_for, MAX_L1_BYTES, MAX_SIZE, OFF_L1, OFF_SIZE};
use super::refcount::{read_full, sync, write_full};
use super::{Qcow2, COPIED, L1_OFFSET_MASK};
use crate::{Allocation, Error, Extent, Result};

const COMPRESSED: u64 = 1 << 62;
const ZERO_FLAG: u64 = 1;

/// Where one virtual cluster's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mapping {
    /// Not in this image: backing file or zeroes.
    Unallocated,
    /// Reads as zeroes (v3 zero flag); `host` is a preallocated cluster or 0.
    Zero { host: u64 },
    /// Stored at this host offset.
    Normal(u64),
    /// Compressed; the L2 entry.
    Compressed(u64),
}

/// Decode an L2 entry; `Err` carries the reason it is invalid.
pub(crate) fn decode_l2(
    entry: u64,
    version: u32,
    cluster_bits: u32,
) -> std::result::Result<Mapping, String> {
    if entry & COMPRESSED != 0 {
        return Ok(Mapping::Compressed(entry));
    }
    let host = entry & L1_OFFSET_MASK;
    if host & ((1 << cluster_bits) - 1) != 0 {
        return Err(format!(
            "L2 entry {entry:#x}: data offset not cluster aligned"
        ));
    }
    if version >= 3 && entry & ZERO_FLAG != 0 {
        return Ok(Mapping::Zero { host });
    }
    Ok(if host == 0 {
        Mapping::Unallocated
    } else {
        Mapping::Normal(host)
    })
}

impl Qcow2 {
    fn l2_bits(&self) -> u32 {
        self.cluster_bits - 3
    }

    /// Offset of the L2 table for L1 index `l1i`, `None` when unallocated.
    fn l2_offset(&self, l1i: u64) -> Result<Option<u64>> {
        let Some(&entry) = self.l1.get(l1i as usize) else {
            return Ok(None);
        };
        let off = entry & L1_OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        if off & (self.cs - 1) != 0 {
            return Err(corrupt(
                &self.path,
                format!("L2 table offset {off:#x} unaligned"),
            ));
        }
        Ok(Some(off))
    }

    /// Make sure the file covers every allocated cluster (before L2 tables referencing
    /// clusters written only in part reach the disk).
    pub(super) fn extend_file(&mut self) -> Result<()> {
        let want = self.next_cluster * self.cs;
        let len = self
            .file
            .metadata()
            .map_err(|e| super::io_err(&self.path, e))?
            .len();
        if len < want {
            self.file
                .set_len(want)
                .map_err(|e| super::io_err(&self.path, e))?;
        }
        Ok(())
    }

    /// Evict the least recently used L2 table when the cache is full. A dirty table is
    /// written only after the refcount blocks (and the data it references) are on disk.
    fn make_room_in_l2_cache(&mut self) -> Result<()> {
        if !self.l2_cache.is_full() {
            return Ok(());
        }
        let Some(old) = self.l2_cache.pop_lru() else {
            return Ok(());
        };
        if old.dirty {
            self.rc.write_back(&self.file, &self.path)?;
            self.extend_file()?;
            sync(&self.file, &self.path)?;
            let bytes: Vec<u8> = old.data.iter().flat_map(|e| e.to_be_bytes()).collect();
            write_full(&self.file, &self.path, &bytes, old.offset)?;
            self.unsynced = true;
        }
        Ok(())
    }

    /// The L2 table at `off`, loaded into the cache. Evicting a dirty table first writes
    /// the refcount blocks and syncs, keeping refcounts ahead of references.
    fn l2_table(&mut self, off: u64) -> Result<&mut Entry<Vec<u64>>> {
        if self.l2_cache.get(off).is_none() {
            self.make_room_in_l2_cache()?;
            let mut raw = vec![0u8; self.cs as usize];
            read_full(&self.file, &self.path, &mut raw, off)?;
            let table = raw
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            self.l2_cache.insert(off, table, false);
        }
        self.l2_cache
            .get(off)
            .ok_or_else(|| corrupt(&self.path, "L2 cache lost an entry"))
    }

    /// Mapping of virtual cluster `vcl`.
    pub(super) fn mapping(&mut self, vcl: u64) -> Result<Mapping> {
        let l1i = vcl >> self.l2_bits();
        let Some(off) = self.l2_offset(l1i)? else {
            return Ok(Mapping::Unallocated);
        };
        let idx = (vcl & ((1 << self.l2_bits()) - 1)) as usize;
        let entry = self.l2_table(off)?.data[idx];
        decode_l2(entry, self.header.version, self.cluster_bits)
            .map_err(|reason| corrupt(&self.path, reason))
    }

    /// The L2 table for L1 index `l1i`, allocating an empty one when needed.
    fn l2_for_write(&mut self, l1i: u64) -> Result<u64> {
        if let Some(off) = self.l2_offset(l1i)? {
            return Ok(off);
        }
        let off = self.alloc_clusters(1)?;
        if self.l2_cache.get(off).is_some() {
            return Err(corrupt(
                &self.path,
                format!("cluster {off:#x} is in use as an L2 table but has no refcount"),
            ));
        }
        self.make_room_in_l2_cache()?;
        let entries = 1usize << self.l2_bits();
        self.l2_cache.insert(off, vec![0u64; entries], true);
        self.note_metadata(off);
        self.l1[l1i as usize] = off | COPIED;
        self.l1_dirty.insert(l1i as usize);
        Ok(off)
    }

    fn set_l2_entry(&mut self, l2off: u64, idx: usize, value: u64) -> Result<()> {
        let table = self.l2_table(l2off)?;
        table.data[idx] = value;
        table.dirty = true;
        Ok(())
    }

    /// Read backing data for `[voff, voff + buf.len())`; zeroes past the backing size.
    fn read_backing(&mut self, buf: &mut [u8], voff: u64) -> Result<()> {
        let Some(backing) = self.backing.as_mut() else {
            buf.fill(0);
            return Ok(());
        };
        let bsize = backing.size();
        let n = if voff >= bsize {
            0
        } else {
            (bsize - voff).min(buf.len() as u64) as usize
        };
        if n > 0 {
            backing.read_at(&mut buf[..n], voff)?;
        }
        buf[n..].fill(0);
        Ok(())
    }

    /// Decompress the cluster described by `entry` into the one-cluster cache.
    fn load_compressed(&mut self, entry: u64) -> Result<&[u8]> {
        if self.compressed.as_ref().map(|c| c.0) != Some(entry) {
            let (off, len) = compressed_range(entry, self.cluster_bits);
            let mut input = vec![0u8; len as usize];
            read_full(&self.file, &self.path, &mut input, off)?;
            let mut out = vec![0u8; self.cs as usize];
            if !inflate_cluster(&input, &mut out) {
                self.compressed = None;
                return Err(corrupt(
                    &self.path,
                    format!("compressed cluster at {off:#x} does not decompress"),
                ));
            }
            self.compressed = Some((entry, out));
        }
        Ok(self
            .compressed
            .as_ref()
            .map(|c| c.1.as_slice())
            .unwrap_or(&[]))
    }

    pub(super) fn read_virtual(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        let cs = self.cs;
        let len = buf.len();
        let mut pos = 0usize;
        while pos < len {
            let voff = offset + pos as u64;
            let in_cl = voff & (cs - 1);
            let first = ((cs - in_cl) as usize).min(len - pos);
            let mapping = self.mapping(voff >> self.cluster_bits)?;
            // Extend over following clusters with the same kind of mapping.
            let mut run = first;
            while pos + run < len && !matches!(mapping, Mapping::Compressed(_)) {
                let next_voff = voff + run as u64;
                let next = self.mapping(next_voff >> self.cluster_bits)?;
                let same = match (mapping, next) {
                    (Mapping::Normal(h), Mapping::Normal(n)) => n == h + (run as u64 + in_cl),
                    (Mapping::Unallocated, Mapping::Unallocated) => true,
                    (Mapping::Zero { .. }, Mapping::Zero { .. }) => true,
                    _ => false,
                };
                if !same {
                    break;
                }
                run += (cs as usize).min(len - pos - run);
            }
            let out = &mut buf[pos..pos + run];
            match mapping {
                Mapping::Normal(host) => read_full(&self.file, &self.path, out, host + in_cl)?,
                Mapping::Unallocated => self.read_backing(out, voff)?,
                Mapping::Zero { .. } => out.fill(0),
                Mapping::Compressed(entry) => {
                    let data = self.load_compressed(entry)?;
                    let start = in_cl as usize;
                    buf[pos..pos + run].copy_from_slice(&data[start..start + run]);
                }
            }
            pos += run;
        }
        Ok(())
    }

    /// Fill `out` (one cluster) with the current content of virtual cluster `vcl`, except
    /// `out[skip]`, which the caller overwrites: only the uncovered head and tail are read.
    fn cluster_content(
        &mut self,
        mapping: Mapping,
        vcl: u64,
        out: &mut [u8],
        skip: std::ops::Range<usize>,
    ) -> Result<()> {
        let base = vcl << self.cluster_bits;
        let (head, rest) = out.split_at_mut(skip.start);
        let tail = &mut rest[skip.len()..];
        match mapping {
            Mapping::Unallocated => {
                self.read_backing(head, base)?;
                self.read_backing(tail, base + skip.end as u64)
            }
            Mapping::Zero { .. } => {
                head.fill(0);
                tail.fill(0);
                Ok(())
            }
            Mapping::Normal(host) => {
                read_full(&self.file, &self.path, head, host)?;
                read_full(&self.file, &self.path, tail, host + skip.end as u64)
            }
            Mapping::Compressed(entry) => {
                let data = self.load_compressed(entry)?;
                out.copy_from_slice(data);
                Ok(())
            }
        }
    }

    /// Host range held by a mapping that is being replaced, to free after the next flush.
    /// A range overlapping metadata means the image is corrupt.
    fn held_range(&self, mapping: Mapping) -> Result<Option<(u64, u64)>> {
        let range = match mapping {
            Mapping::Normal(host) => Some((host, self.cs)),
            Mapping::Zero { host } if host != 0 => Some((host, self.cs)),
            Mapping::Compressed(entry) => {
                let (off, len) = compressed_range(entry, self.cluster_bits);
                (len > 0).then_some((off, len))
            }
            _ => None,
        };
        if let Some((off, len)) = range {
            self.check_not_metadata(off, len)?;
        }
        Ok(range)
    }

    fn check_not_metadata(&self, off: u64, len: u64) -> Result<()> {
        if self.is_metadata(off, len) {
            return Err(corrupt(
                &self.path,
                format!("an L2 entry points into metadata at {off:#x}"),
            ));
        }
        Ok(())
    }

    pub(super) fn write_virtual(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        let cs = self.cs;
        let len = buf.len();
        let mut pos = 0usize;
        // Pending contiguous data write: (host offset, start in buf, length).
        let mut run: Option<(u64, usize, usize)> = None;
        let mut frees = Vec::new();
        let mut current_l1 = u64::MAX;
        let result = (|| -> Result<()> {
            while pos < len {
                let voff = offset + pos as u64;
                let in_cl = voff & (cs - 1);
                let n = ((cs - in_cl) as usize).min(len - pos);
                let vcl = voff >> self.cluster_bits;
                let l1i = vcl >> self.l2_bits();
                if l1i != current_l1 {
                    // Data must be written before another L2 table load can evict the
                    // (dirty) table that references it.
                    self.write_run(buf, run.take())?;
                    current_l1 = l1i;
                }
                let l2off = self.l2_for_write(l1i)?;
                let idx = (vcl & ((1 << self.l2_bits()) - 1)) as usize;
                let entry = self.l2_table(l2off)?.data[idx];
                let mapping = decode_l2(entry, self.header.version, self.cluster_bits)
                    .map_err(|reason| corrupt(&self.path, reason))?;
                let host = match mapping {
                    Mapping::Normal(host) => {
                        self.check_not_metadata(host, cs)?;
                        host + in_cl
                    }
                    _ => {
                        let held = self.held_range(mapping)?;
                        let new = self.alloc_clusters(1)?;
                        let fresh_zero = matches!(mapping, Mapping::Zero { .. })
                            || (mapping == Mapping::Unallocated && self.backing.is_none());
                        let full = in_cl == 0 && n as u64 == cs;
                        if !full && !fresh_zero {
                            // Copy-on-write of the parts this write does not cover.
                            self.write_run(buf, run.take())?;
                            let mut cluster = vec![0u8; cs as usize];
                            let covered = in_cl as usize..in_cl as usize + n;
                            self.cluster_content(mapping, vcl, &mut cluster, covered.clone())?;
                            cluster[covered].copy_from_slice(&buf[pos..pos + n]);
                            write_full(&self.file, &self.path, &cluster, new)?;
                        }
                        self.set_l2_entry(l2off, idx, new | COPIED)?;
                        frees.extend(held);
                        if !full && !fresh_zero {
                            pos += n;
                            continue;
                        }
                        // A new cluster reads as zeroes beyond what is written into it.
                        new + in_cl
                    }
                };
                run = match run {
                    Some((h, start, l)) if h + l as u64 == host && start + l == pos => {
                        Some((h, start, l + n))
                    }
                    other => {
                        self.write_run(buf, other)?;
                        Some((host, pos, n))
                    }
                };
                pos += n;
            }
            self.write_run(buf, run.take())
        })();
        for (off, l) in frees {
            self.free_later(off, l)?;
        }
        result
    }

    fn write_run(&mut self, buf: &[u8], run: Option<(u64, usize, usize)>) -> Result<()> {
        if let Some((host, start, len)) = run {
            write_full(&self.file, &self.path, &buf[start..start + len], host)?;
        }
        Ok(())
    }

    pub(super) fn zero_virtual(&mut self, offset: u64, len: u64) -> Result<()> {
        let cs = self.cs;
        let end = offset + len;
        let mut pos = offset;
        let mut frees = Vec::new();
        let zero_cluster = vec![0u8; cs as usize];
        let result = (|| -> Result<()> {
            while pos < end {
                let in_cl = pos & (cs - 1);
                let n = (cs - in_cl).min(end - pos);
                let vcl = pos >> self.cluster_bits;
                let mapping = self.mapping(vcl)?;
                let reads_zero = matches!(mapping, Mapping::Zero { .. })
                    || (mapping == Mapping::Unallocated && self.backing.is_none());
                if reads_zero {
                    pos += n;
                    continue;
                }
                let may_deallocate = self.header.version >= 3 || self.backing.is_none();
                if n < cs || !may_deallocate {
                    self.write_virtual(&zero_cluster[..n as usize], pos)?;
                    pos += n;
                    continue;
                }
                let l1i = vcl >> self.l2_bits();
                let l2off = self.l2_for_write(l1i)?;
                let idx = (vcl & ((1 << self.l2_bits()) - 1)) as usize;
                let value = if self.header.version >= 3 {
                    ZERO_FLAG
                } else {
                    0
                };
                let held = self.held_range(mapping)?;
                self.set_l2_entry(l2off, idx, value)?;
                frees.extend(held);
                pos += n;
            }
            Ok(())
        })();
        for (off, l) in frees {
            self.free_later(off, l)?;
        }
        result
    }

    pub(super) fn allocation_map(&mut self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let mut out: Vec<Extent> = Vec::new();
        let end = offset + len;
        let mut pos = offset;
        let span = 1u64 << (self.cluster_bits + self.l2_bits());
        let unallocated = if self.backing.is_some() {
            Allocation::Backing
        } else {
            Allocation::Zero
        };
        while pos < end {
            let vcl = pos >> self.cluster_bits;
            let (state, next) = if self.l2_offset(vcl >> self.l2_bits())?.is_none() {
                (unallocated, (pos / span + 1) * span)
            } else {
                let state = match self.mapping(vcl)? {
                    Mapping::Unallocated => unallocated,
                    Mapping::Zero { .. } => Allocation::Zero,
                    Mapping::Normal(_) | Mapping::Compressed(_) => Allocation::Data,
                };
                (state, (vcl + 1) << self.cluster_bits)
            };
            let stop = next.min(end);
            match out.last_mut() {
                Some(last) if last.state == state => last.len += stop - pos,
                _ => out.push(Extent {
                    offset: pos,
                    len: stop - pos,
                    state,
                }),
            }
            pos = stop;
        }
        Ok(out)
    }

    pub(super) fn resize_virtual(&mut self, new_size: u64) -> Result<()> {
        let old = self.header.size;
        if new_size > MAX_SIZE {
            return Err(Error::InvalidArgument(format!("size {new_size} too large")));
        }
        if new_size < old {
            let tail = self.allocation_map(new_size, old - new_size)?;
            if tail.iter().any(|e| e.state != Allocation::Zero) {
                return Err(Error::InvalidArgument(format!(
                    "{}: refusing to shrink: data is stored beyond {new_size} bytes",
                    self.path.display()
                )));
            }
        }
        let needed = l1_entries_for(new_size, self.cluster_bits);
        if needed > self.l1.len() as u64 {
            self.grow_l1(needed)?;
        }
        write_full(&self.file, &self.path, &new_size.to_be_bytes(), OFF_SIZE)?;
        sync(&self.file, &self.path)?;
        self.header.size = new_size;
        Ok(())
    }

    /// Move the L1 table to a larger one at the end of the file.
    fn grow_l1(&mut self, entries: u64) -> Result<()> {
        if entries * 8 > MAX_L1_BYTES {
            return Err(Error::InvalidArgument(format!(
                "{}: size too large for this cluster size (L1 table limit)",
                self.path.display()
            )));
        }
        // Everything the new table will point to must be on disk first.
        self.flush_metadata()?;
        let cs = self.cs;
        let clusters = (entries * 8).div_ceil(cs);
        let start = self.alloc_clusters(clusters)?;
        let mut l1 = self.l1.clone();
        l1.resize(entries as usize, 0);
        let mut bytes: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        bytes.resize((clusters * cs) as usize, 0);
        write_full(&self.file, &self.path, &bytes, start)?;
        self.rc.write_back(&self.file, &self.path)?;
        sync(&self.file, &self.path)?;
        let mut hdr = [0u8; 12];
        hdr[..4].copy_from_slice(&(entries as u32).to_be_bytes());
        hdr[4..].copy_from_slice(&start.to_be_bytes());
        write_full(&self.file, &self.path, &hdr, OFF_L1)?;
        sync(&self.file, &self.path)?;
        let old_offset = self.header.l1_table_offset;
        let old_clusters = (self.l1.len() as u64 * 8).div_ceil(cs);
        self.l1 = l1;
        self.header.l1_size = entries as u32;
        self.header.l1_table_offset = start;
        if old_offset != 0 {
            for c in old_offset / cs..old_offset / cs + old_clusters {
                self.add_refcount(c, -1)?;
            }
        }
        Ok(())
    }
}
