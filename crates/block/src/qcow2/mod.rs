//! qcow2 (versions 2 and 3): read, write, create, check.
//!
//! Metadata caching is write-back with qemu's ordering: refcount blocks reach the disk
//! before the L2 tables that reference newly allocated clusters, L2 tables before the L1
//! entries that point to them, and clusters are freed (refcount decremented) only after
//! the L2 update that dropped them is durable. A crash can therefore leak clusters but not
//! corrupt the image; v3 images carry the dirty bit while open for writing, and the next
//! read-write open repairs the leaks.

mod cache;
mod check;
mod compressed;
mod create;
mod header;
mod io;
mod refcount;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub(crate) use check::check;
pub(crate) use create::create;

use cache::TableCache;
use header::{corrupt, unsupported, Header, INCOMPAT_CORRUPT, INCOMPAT_DIRTY};
use refcount::{io_err, read_full, sync, write_full, Refcounts};

use crate::{DiskImage, Extent, Format, OpenOptions, Result};

/// Bytes of L2 tables kept in memory (covers 256 GiB with 64 KiB clusters).
const L2_CACHE_BYTES: u64 = 32 << 20;
const REFCOUNT_CACHE_BYTES: u64 = 4 << 20;
/// Freed clusters waiting for the next flush before an internal flush is forced.
const MAX_PENDING_FREES: usize = 4096;

pub(crate) const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub(crate) const COPIED: u64 = 1 << 63;

/// An open qcow2 image.
pub(crate) struct Qcow2 {
    file: File,
    path: PathBuf,
    read_only: bool,
    header: Header,
    cluster_bits: u32,
    cs: u64,
    l1: Vec<u64>,
    l1_dirty: BTreeSet<usize>,
    l2_cache: TableCache<Vec<u64>>,
    rc: Refcounts,
    /// Index of the first cluster past everything allocated: where allocation appends.
    next_cluster: u64,
    /// Host byte ranges dropped from L2 tables, freed at the next flush.
    pending_free: Vec<(u64, u64)>,
    backing: Option<Box<dyn DiskImage>>,
    /// Whether the dirty bit has been set by this handle.
    marked_dirty: bool,
    /// Whether anything was written through this handle.
    modified: bool,
    /// Whether anything was written since the last sync.
    unsynced: bool,
    /// Last decompressed cluster: (descriptor, data).
    compressed: Option<(u64, Vec<u8>)>,
    /// Sorted cluster indices of L2 tables and refcount blocks, so that a corrupt L2
    /// entry cannot make a data write or free land on metadata.
    metadata: Vec<u64>,
}

pub(crate) fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
    Ok(Box::new(Qcow2::open(path, opts)?))
}

/// Read and validate the header of the qcow2 file `file`.
pub(crate) fn read_header(file: &File, path: &Path) -> Result<Header> {
    let mut first = [0u8; 24];
    read_full(file, path, &mut first, 0)?;
    let bits = Header::peek_cluster_bits(&first)
        .ok_or_else(|| corrupt(path, "bad magic or truncated header"))?;
    if !(header::MIN_CLUSTER_BITS..=header::MAX_CLUSTER_BITS).contains(&bits) {
        return Err(corrupt(
            path,
            format!("cluster_bits {bits} out of range 9..=21"),
        ));
    }
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let n = (1u64 << bits).min(len) as usize;
    let mut cluster0 = vec![0u8; n];
    read_full(file, path, &mut cluster0, 0)?;
    Header::parse(path, &cluster0)
}

impl Qcow2 {
    pub(crate) fn open(path: &Path, opts: &OpenOptions) -> Result<Qcow2> {
        let file = crate::open::open_image_file(path, opts.read_only)?;
        let mut header = read_header(&file, path)?;
        if !opts.read_only {
            if header.incompatible & INCOMPAT_CORRUPT != 0 {
                return Err(corrupt(
                    path,
                    "the image is marked corrupt; refusing to write (repair it with `qemu-img check -r all`)",
                ));
            }
            if header.nb_snapshots > 0 {
                return Err(unsupported(
                    path,
                    "writing to images with internal snapshots",
                ));
            }
            if header.incompatible & INCOMPAT_DIRTY != 0 {
                // Refcounts may be stale after a crash: repair leaks before writing.
                let report = check::check_file(&file, path, true)?;
                if report.error_count > 0 {
                    return Err(corrupt(
                        path,
                        format!(
                            "the image was not closed cleanly and has {} refcount errors \
                             (repair with `qemu-img check -r all`): {}",
                            report.error_count,
                            report.errors.join("; ")
                        ),
                    ));
                }
                header = read_header(&file, path)?;
            }
        }
        let cs = header.cluster_size();
        let l1_bytes = header.l1_size as u64 * 8;
        let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
        let l1_end = header.l1_table_offset.saturating_add(l1_bytes);
        let reftable_end = header
            .refcount_table_offset
            .saturating_add(header.refcount_table_clusters as u64 * cs);
        if l1_end > file_len.max(cs) + cs || reftable_end > file_len + cs {
            return Err(corrupt(
                path,
                "L1 or refcount table lies beyond the end of the file",
            ));
        }
        // Bounded by the header validation (MAX_L1_BYTES) and the chain's budget.
        crate::budget::charge(path, "L1 table", l1_bytes)?;
        let mut raw = vec![0u8; l1_bytes as usize];
        read_full(&file, path, &mut raw, header.l1_table_offset)?;
        let l1: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let rc = Refcounts::load(&file, path, &header, REFCOUNT_CACHE_BYTES)?;
        let ends = [file_len, l1_end, reftable_end];
        let next_cluster = ends.iter().max().copied().unwrap_or(0).div_ceil(cs).max(1);
        let backing = match &header.backing_file {
            Some(name) => {
                let format = match header.backing_format.as_deref() {
                    Some(f) => Some(
                        f.parse::<Format>()
                            .map_err(|_| unsupported(path, format!("backing file format '{f}'")))?,
                    ),
                    None => None,
                };
                Some(crate::open_backing(
                    path,
                    Path::new(name),
                    format,
                    opts.allow_external_backing,
                )?)
            }
            None => None,
        };
        let mut metadata: Vec<u64> = l1
            .iter()
            .map(|e| e & L1_OFFSET_MASK)
            .chain(rc.table.iter().map(|e| e & !0x1ff))
            .filter(|&off| off != 0)
            .map(|off| off >> header.cluster_bits)
            .collect();
        metadata.sort_unstable();
        metadata.dedup();
        Ok(Qcow2 {
            file,
            path: path.to_path_buf(),
            read_only: opts.read_only,
            cluster_bits: header.cluster_bits,
            cs,
            header,
            l1,
            l1_dirty: BTreeSet::new(),
            l2_cache: TableCache::new((L2_CACHE_BYTES / cs).max(16) as usize),
            rc,
            next_cluster,
            pending_free: Vec::new(),
            backing,
            marked_dirty: false,
            modified: false,
            unsynced: false,
            compressed: None,
            metadata,
        })
    }

    /// Whether host range `[off, off + len)` overlaps the header, the L1 table, the refcount
    /// table, an L2 table or a refcount block.
    fn is_metadata(&self, off: u64, len: u64) -> bool {
        let first = off >> self.cluster_bits;
        let last = (off + len.max(1) - 1) >> self.cluster_bits;
        let overlaps = |start: u64, bytes: u64| {
            let s = start >> self.cluster_bits;
            let e = (start + bytes).div_ceil(self.cs);
            bytes > 0 && first < e && last >= s
        };
        let l1_bytes = self.l1.len() as u64 * 8;
        let rt_bytes = self.rc.table_clusters * self.cs;
        if first == 0
            || overlaps(self.header.l1_table_offset, l1_bytes)
            || overlaps(self.rc.table_offset, rt_bytes)
        {
            return true;
        }
        let at = self.metadata.partition_point(|&c| c < first);
        self.metadata.get(at).is_some_and(|&c| c <= last)
    }

    /// Record a new L2 table or refcount block at host offset `off`.
    fn note_metadata(&mut self, off: u64) {
        let c = off >> self.cluster_bits;
        let at = self.metadata.partition_point(|&x| x < c);
        if self.metadata.get(at) != Some(&c) {
            self.metadata.insert(at, c);
        }
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.header.size => Ok(()),
            _ => Err(crate::Error::OutOfRange {
                offset,
                len,
                size: self.header.size,
            }),
        }
    }

    /// Before the first modification: refuse read-only handles and set the dirty bit (v3)
    /// so that leaks left by a crash are repaired on the next open.
    fn begin_write(&mut self) -> Result<()> {
        if self.read_only {
            return Err(crate::Error::ReadOnly);
        }
        self.modified = true;
        self.unsynced = true;
        if self.marked_dirty || self.header.version < 3 {
            return Ok(());
        }
        let incompat = self.header.incompatible | INCOMPAT_DIRTY;
        write_full(
            &self.file,
            &self.path,
            &incompat.to_be_bytes(),
            header::OFF_INCOMPAT,
        )?;
        // Autoclear features (e.g. bitmaps) we do not maintain must be cleared on write.
        if self.header.autoclear != 0 {
            write_full(&self.file, &self.path, &[0u8; 8], header::OFF_AUTOCLEAR)?;
            self.header.autoclear = 0;
        }
        sync(&self.file, &self.path)?;
        self.header.incompatible = incompat;
        self.marked_dirty = true;
        Ok(())
    }

    /// Write back metadata in crash-safe order and make everything durable.
    fn flush_metadata(&mut self) -> Result<()> {
        // Keep the file as long as everything allocated (a cluster written only in part).
        self.extend_file()?;
        let l2_dirty = self.l2_cache.has_dirty();
        let rc_wrote = self.rc.write_back(&self.file, &self.path)?;
        if rc_wrote || self.unsynced {
            sync(&self.file, &self.path)?;
            self.unsynced = false;
        }
        if l2_dirty {
            self.write_back_l2()?;
            sync(&self.file, &self.path)?;
        }
        if !self.l1_dirty.is_empty() {
            let dirty = std::mem::take(&mut self.l1_dirty);
            for i in dirty {
                let at = self.header.l1_table_offset + i as u64 * 8;
                write_full(&self.file, &self.path, &self.l1[i].to_be_bytes(), at)?;
            }
            sync(&self.file, &self.path)?;
        }
        if !self.pending_free.is_empty() {
            self.release_pending()?;
        }
        Ok(())
    }

    fn write_back_l2(&mut self) -> Result<()> {
        for entry in self.l2_cache.dirty_entries() {
            let bytes: Vec<u8> = entry.data.iter().flat_map(|e| e.to_be_bytes()).collect();
            write_full(&self.file, &self.path, &bytes, entry.offset)?;
            entry.dirty = false;
        }
        Ok(())
    }

    /// Free clusters whose last reference is durably gone: drop their refcounts (written
    /// at the next flush) and give their space back to the host file system.
    fn release_pending(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending_free);
        self.unsynced = true;
        for (offset, len) in pending {
            let first = offset >> self.cluster_bits;
            let last = (offset + len - 1) >> self.cluster_bits;
            for c in first..=last {
                self.add_refcount(c, -1)?;
                if self.rc.get(&self.file, &self.path, c)? == 0 {
                    let _ =
                        crate::raw::zero_file_range(&self.file, c << self.cluster_bits, self.cs);
                }
            }
        }
        Ok(())
    }

    fn free_later(&mut self, offset: u64, len: u64) -> Result<()> {
        self.pending_free.push((offset, len));
        if self.pending_free.len() >= MAX_PENDING_FREES {
            self.flush_metadata()?;
        }
        Ok(())
    }

    fn mark_clean(&mut self) -> Result<()> {
        if !self.marked_dirty {
            return Ok(());
        }
        self.flush_metadata()?;
        // Refcount decrements from the last release are still in the cache.
        self.flush_metadata()?;
        let incompat = self.header.incompatible & !INCOMPAT_DIRTY;
        write_full(
            &self.file,
            &self.path,
            &incompat.to_be_bytes(),
            header::OFF_INCOMPAT,
        )?;
        sync(&self.file, &self.path)?;
        self.header.incompatible = incompat;
        self.marked_dirty = false;
        Ok(())
    }
}

impl Drop for Qcow2 {
    fn drop(&mut self) {
        if self.modified {
            // Errors cannot be reported from drop; a dirty bit left set makes the next
            // open repair the image.
            let _ = self.mark_clean();
        }
    }
}

impl DiskImage for Qcow2 {
    fn format(&self) -> Format {
        Format::Qcow2
    }

    fn size(&self) -> u64 {
        self.header.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        self.read_virtual(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        self.begin_write()?;
        self.write_virtual(buf, offset)
    }

    fn flush(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.flush_metadata()
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()> {
        self.check_range(offset, len)?;
        self.begin_write()?;
        self.zero_virtual(offset, len)
    }

    fn allocation(&mut self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.check_range(offset, len)?;
        self.allocation_map(offset, len)
    }

    fn allocated_bytes(&self) -> Result<u64> {
        let meta = self.file.metadata().map_err(|e| io_err(&self.path, e))?;
        Ok(meta.blocks() * 512)
    }

    fn backing(&self) -> Option<&dyn DiskImage> {
        self.backing.as_deref()
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn resize(&mut self, new_size: u64) -> Result<()> {
        self.begin_write()?;
        self.resize_virtual(new_size)
    }

    fn details(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("version".to_string(), self.header.version.to_string()),
            ("cluster_size".to_string(), self.cs.to_string()),
            (
                "refcount_bits".to_string(),
                (1u32 << self.header.refcount_order).to_string(),
            ),
        ];
        if let Some(f) = &self.header.backing_format {
            out.push(("backing_format".to_string(), f.clone()));
        }
        if self.header.nb_snapshots > 0 {
            out.push((
                "snapshots".to_string(),
                self.header.nb_snapshots.to_string(),
            ));
        }
        if self.header.incompatible & INCOMPAT_DIRTY != 0 && !self.marked_dirty {
            out.push(("dirty".to_string(), "not closed cleanly".to_string()));
        }
        if self.header.incompatible & INCOMPAT_CORRUPT != 0 {
            out.push(("corrupt".to_string(), "marked corrupt".to_string()));
        }
        out
    }
}

#[cfg(test)]
mod tests;
