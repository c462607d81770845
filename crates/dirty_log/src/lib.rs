//! Which guest pages the VMM's own code wrote while a live migration copies memory: the
//! device models (used rings, received frames, disk reads, status bytes, discarded balloon
//! pages) and the instruction emulator. KVM's dirty log sees only the vCPUs' writes.
//!
//! One log per process (a vessel process runs one VM). It is off unless a migration turns
//! it on; a write then costs one relaxed atomic load. On, a write sets its pages' bits
//! (after the write is done, so that a page taken from the log is never missing a write
//! made before).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

/// The page size of the log (KVM's on x86-64).
pub const PAGE_SIZE: u64 = 4096;

static ON: AtomicBool = AtomicBool::new(false);
/// One bit per guest-physical page below the limit given to [`start`].
static PAGES: RwLock<Vec<AtomicU64>> = RwLock::new(Vec::new());

fn pages() -> RwLockReadGuard<'static, Vec<AtomicU64>> {
    PAGES.read().unwrap_or_else(|p| p.into_inner())
}

/// Starts logging writes to guest-physical addresses below `limit`, with nothing logged.
pub fn start(limit: u64) {
    let words = limit.div_ceil(PAGE_SIZE).div_ceil(64);
    let mut pages = PAGES.write().unwrap_or_else(|p| p.into_inner());
    *pages = (0..words).map(|_| AtomicU64::new(0)).collect();
    ON.store(true, Ordering::SeqCst);
}

/// Stops logging and frees the log.
pub fn stop() {
    ON.store(false, Ordering::SeqCst);
    PAGES.write().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Whether writes are logged.
pub fn is_on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Records that `len` bytes at guest-physical `addr` were written (call it after the
/// write). Addresses beyond the log's limit (not RAM) are not recorded.
pub fn mark(addr: u64, len: u64) {
    if !ON.load(Ordering::Relaxed) || len == 0 {
        return;
    }
    let pages = pages();
    let first = addr / PAGE_SIZE;
    let last = addr.saturating_add(len - 1) / PAGE_SIZE;
    for page in first..=last {
        let Some(word) = usize::try_from(page / 64).ok().and_then(|w| pages.get(w)) else {
            return;
        };
        word.fetch_or(1 << (page % 64), Ordering::AcqRel);
    }
}

/// The pages written since `start` or the last `take`, one bit per page of guest-physical
/// address space, and clears them.
pub fn take() -> Vec<u64> {
    pages()
        .iter()
        .map(|w| w.swap(0, Ordering::AcqRel))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_logged_only_while_on_and_taken_once() {
        mark(0, 1);
        assert!(take().is_empty());
        start(1 << 20);
        mark(0x1fff, 2); // pages 1 and 2
        mark(64 * PAGE_SIZE, 1); // page 64: the second word
        mark(u64::MAX - 1, 10); // beyond the limit: ignored, no overflow
        mark(0x5000, 0);
        let bits = take();
        assert_eq!(bits.len(), 4);
        assert_eq!(bits[0], 0b110);
        assert_eq!(bits[1], 1);
        assert!(take().iter().all(|&w| w == 0));
        stop();
        mark(0x1000, 1);
        assert!(take().is_empty());
    }
}
