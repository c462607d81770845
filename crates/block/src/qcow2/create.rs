//! Creating empty qcow2 v3 images (optionally over a backing file).

use std::fs::OpenOptions as FsOpenOptions;
use std::path::Path;

use super::header::{l1_entries_for, Header, MAX_L1_BYTES, MAX_SIZE, V3_HEADER_LEN};
use super::refcount::{io_err, set_entry, write_full};
use crate::{CreateOptions, Error, Format, Result};

const DEFAULT_CLUSTER_SIZE: u64 = 64 * 1024;
const REFCOUNT_ORDER: u32 = 4;

/// File layout of a new image, in clusters: header, refcount table, refcount blocks, L1.
struct Layout {
    reftable_clusters: u64,
    refblocks: u64,
    l1_clusters: u64,
}

impl Layout {
    fn compute(cluster_bits: u32, l1_entries: u64) -> Layout {
        let cs = 1u64 << cluster_bits;
        let per_block = 1u64 << (cluster_bits + 3 - REFCOUNT_ORDER);
        let l1_clusters = (l1_entries * 8).div_ceil(cs);
        let mut layout = Layout {
            reftable_clusters: 1,
            refblocks: 1,
            l1_clusters,
        };
        loop {
            let refblocks = layout.total().div_ceil(per_block);
            let reftable_clusters = (refblocks * 8).div_ceil(cs);
            if refblocks == layout.refblocks && reftable_clusters == layout.reftable_clusters {
                return layout;
            }
            layout.refblocks = refblocks.max(layout.refblocks);
            layout.reftable_clusters = reftable_clusters.max(layout.reftable_clusters);
        }
    }

    fn total(&self) -> u64 {
        1 + self.reftable_clusters + self.refblocks + self.l1_clusters
    }
}

pub(crate) fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<()> {
    if opts.fixed {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            format: Format::Qcow2,
            feature: "preallocation".into(),
        });
    }
    let cs = opts.cluster_size.unwrap_or(DEFAULT_CLUSTER_SIZE);
    if !cs.is_power_of_two() || !(512..=(2 << 20)).contains(&cs) {
        return Err(Error::InvalidArgument(format!(
            "qcow2 cluster size {cs} must be a power of two from 512 to 2M"
        )));
    }
    let bits = cs.trailing_zeros();
    if size > MAX_SIZE {
        return Err(Error::InvalidArgument(format!("size {size} too large")));
    }
    let l1_entries = l1_entries_for(size, bits);
    if l1_entries * 8 > MAX_L1_BYTES {
        return Err(Error::InvalidArgument(format!(
            "size {size} too large for cluster size {cs}"
        )));
    }
    let (backing_file, backing_format) = match &opts.backing {
        Some((name, format)) => {
            let resolved = crate::resolve_backing(path, name);
            let format = match format {
                Some(f) => *f,
                None => crate::detect(&resolved)?,
            };
            let name = name.to_str().ok_or_else(|| {
                Error::InvalidArgument(format!("backing file name {} is not UTF-8", name.display()))
            })?;
            (Some(name.to_string()), Some(format.qemu_name().to_string()))
        }
        None => (None, None),
    };
    let layout = Layout::compute(bits, l1_entries);
    let reftable_at = 1;
    let refblocks_at = reftable_at + layout.reftable_clusters;
    let l1_at = refblocks_at + layout.refblocks;
    let header = Header {
        version: 3,
        cluster_bits: bits,
        size,
        l1_size: l1_entries as u32,
        l1_table_offset: l1_at * cs,
        refcount_table_offset: reftable_at * cs,
        refcount_table_clusters: layout.reftable_clusters as u32,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible: 0,
        compatible: 0,
        autoclear: 0,
        refcount_order: REFCOUNT_ORDER,
        header_length: V3_HEADER_LEN as u32,
        backing_file,
        backing_format,
    };
    let header_bytes = header.serialize().map_err(Error::InvalidArgument)?;

    let mut reftable = vec![0u8; (layout.reftable_clusters * cs) as usize];
    for i in 0..layout.refblocks {
        let at = (i * 8) as usize;
        reftable[at..at + 8].copy_from_slice(&((refblocks_at + i) * cs).to_be_bytes());
    }
    let mut refblocks = vec![0u8; (layout.refblocks * cs) as usize];
    for c in 0..layout.total() {
        set_entry(&mut refblocks, REFCOUNT_ORDER, c, 1);
    }

    let file = FsOpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    let written = (|| -> Result<()> {
        write_full(&file, path, &header_bytes, 0)?;
        write_full(&file, path, &reftable, reftable_at * cs)?;
        write_full(&file, path, &refblocks, refblocks_at * cs)?;
        file.set_len(layout.total() * cs)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_err(path, e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_its_own_clusters() {
        for bits in [9u32, 12, 16, 21] {
            for size in [0u64, 1 << 20, 8 << 30, 1 << 40] {
                let l1 = l1_entries_for(size, bits);
                if l1 * 8 > MAX_L1_BYTES {
                    continue;
                }
                let layout = Layout::compute(bits, l1);
                let per_block = 1u64 << (bits + 3 - REFCOUNT_ORDER);
                assert!(layout.refblocks * per_block >= layout.total());
                assert!(layout.reftable_clusters << (bits - 3) >= layout.refblocks);
            }
        }
    }
}
