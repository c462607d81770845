//! Which parts of a disk the guest changed: a bitmap of fixed-size chunks that a
//! [`super::Block`] marks for every write, discard and write-zeroes while a live migration
//! copies the disk (`--copy-storage`). The copier takes the set (clearing it) and reads those
//! chunks again; a write that lands after it took the set is marked again, so nothing is
//! missed between two looks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of disk per bit.
pub const CHUNK_BYTES: u64 = 64 << 10;

/// Chunks of one disk written since the last [`WrittenChunks::take`].
#[derive(Debug)]
pub struct WrittenChunks {
    size: u64,
    words: Vec<AtomicU64>,
}

impl WrittenChunks {
    /// An empty set for a disk of `size` bytes.
    pub fn new(size: u64) -> Self {
        let chunks = size.div_ceil(CHUNK_BYTES);
        let words = (0..chunks.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        Self { size, words }
    }

    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Marks every chunk `len` bytes at `offset` touch (the part inside the disk).
    pub fn mark(&self, offset: u64, len: u64) {
        if len == 0 || offset >= self.size {
            return;
        }
        let end = offset.saturating_add(len).min(self.size);
        let first = offset / CHUNK_BYTES;
        let last = (end - 1) / CHUNK_BYTES;
        for chunk in first..=last {
            if let Some(word) = self.words.get((chunk / 64) as usize) {
                word.fetch_or(1 << (chunk % 64), Ordering::Release);
            }
        }
    }

    /// Marks the whole disk (its image was replaced).
    pub fn mark_all(&self) {
        self.mark(0, self.size);
    }

    /// The chunks marked so far, as a bitmap of 64 chunks per word; the set is empty again.
    pub fn take(&self) -> Vec<u64> {
        self.words
            .iter()
            .map(|w| w.swap(0, Ordering::AcqRel))
            .collect()
    }
}

/// The byte ranges of the chunks set in `bitmap` over a disk of `size` bytes, adjacent
/// chunks joined up to `max_run` bytes per range.
pub fn ranges(bitmap: &[u64], size: u64, max_run: u64) -> Vec<(u64, u64)> {
    let chunks = size.div_ceil(CHUNK_BYTES);
    let set = |c: u64| {
        bitmap
            .get((c / 64) as usize)
            .is_some_and(|w| w & (1 << (c % 64)) != 0)
    };
    let mut out: Vec<(u64, u64)> = Vec::new();
    for chunk in (0..chunks).filter(|&c| set(c)) {
        let start = chunk * CHUNK_BYTES;
        let len = CHUNK_BYTES.min(size - start);
        match out.last_mut() {
            Some((s, l)) if *s + *l == start && *l + len <= max_run => *l += len,
            _ => out.push((start, len)),
        }
    }
    out
}

/// How many chunks `bitmap` has set.
pub fn count(bitmap: &[u64]) -> u64 {
    bitmap.iter().map(|w| u64::from(w.count_ones())).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_mark_the_chunks_they_touch_and_take_clears_them() {
        let size = 10 * CHUNK_BYTES + 512;
        let log = WrittenChunks::new(size);
        log.mark(CHUNK_BYTES - 512, 1024); // straddles chunks 0 and 1
        log.mark(10 * CHUNK_BYTES, 512); // the short last chunk
        log.mark(size, 4096); // past the end: nothing
        log.mark(5 * CHUNK_BYTES, 0); // empty: nothing
        let taken = log.take();
        assert_eq!(count(&taken), 3);
        assert_eq!(
            ranges(&taken, size, 1 << 20),
            vec![(0, 2 * CHUNK_BYTES), (10 * CHUNK_BYTES, 512)]
        );
        assert_eq!(count(&log.take()), 0);
        log.mark(u64::MAX - 1, 10); // no overflow
        assert_eq!(count(&log.take()), 0);
    }

    #[test]
    fn runs_are_split_at_the_limit() {
        let size = 200 * CHUNK_BYTES;
        let log = WrittenChunks::new(size);
        log.mark_all();
        let taken = log.take();
        assert_eq!(count(&taken), 200);
        let runs = ranges(&taken, size, 64 * CHUNK_BYTES);
        assert_eq!(runs.len(), 4);
        assert_eq!(runs[3], (192 * CHUNK_BYTES, 8 * CHUNK_BYTES));
        assert_eq!(runs.iter().map(|r| r.1).sum::<u64>(), size);
    }
}
