//! Which guest pages the VMM's own code wrote while a live migration copies memory: the
//! device models (used rings, received frames, disk reads, status bytes, discarded balloon
//! pages) and the instruction emulator. KVM's dirty log sees only the vCPUs' writes.
//!
//! One log per process (a vessel process runs one VM, or serves one vhost-user frontend).
//! It is off unless a migration turns it on; a write then costs one relaxed atomic load.
//! On, a write sets its pages' bits (after the write is done, so that a page taken from
//! the log is never missing a write made before).
//!
//! The bits go to the process's own bitmap ([`start`], read with [`take`]), or, in a
//! vhost-user backend, to the log memory the frontend shared (`VHOST_USER_SET_LOG_BASE`,
//! [`start_shared`]), which the frontend reads itself. Both have one bit per page: bit
//! `page % 64` of little-endian 64-bit word `page / 64`, which is bit `page % 8` of byte
//! `page / 8`, the vhost log's layout.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

/// The page size of the log (KVM's on x86-64, and the vhost log's).
pub const PAGE_SIZE: u64 = 4096;

/// Log memory another process reads: one bit per guest-physical page, bit `page % 8` of
/// byte `page / 8`. Pages beyond it are not logged.
pub trait SharedLog: Send + Sync {
    fn bytes(&self) -> &[AtomicU8];
}

/// Where the bits go.
enum Log {
    Own(Vec<AtomicU64>),
    Shared(Box<dyn SharedLog>),
}

static ON: AtomicBool = AtomicBool::new(false);
static LOG: RwLock<Log> = RwLock::new(Log::Own(Vec::new()));

fn log() -> RwLockReadGuard<'static, Log> {
    LOG.read().unwrap_or_else(|p| p.into_inner())
}

fn replace(new: Log) {
    *LOG.write().unwrap_or_else(|p| p.into_inner()) = new;
}

/// Starts logging writes to guest-physical addresses below `limit`, with nothing logged.
pub fn start(limit: u64) {
    let words = limit.div_ceil(PAGE_SIZE).div_ceil(64);
    replace(Log::Own((0..words).map(|_| AtomicU64::new(0)).collect()));
    ON.store(true, Ordering::SeqCst);
}

/// Starts logging writes into `shared` (a vhost-user frontend's log memory); bits already
/// set there stay.
pub fn start_shared(shared: Box<dyn SharedLog>) {
    replace(Log::Shared(shared));
    ON.store(true, Ordering::SeqCst);
}

/// Stops logging and frees the log (a shared log is unmapped when its owner drops it).
pub fn stop() {
    ON.store(false, Ordering::SeqCst);
    replace(Log::Own(Vec::new()));
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
    let log = log();
    let first = addr / PAGE_SIZE;
    let last = addr.saturating_add(len - 1) / PAGE_SIZE;
    for page in first..=last {
        let set = match &*log {
            Log::Own(words) => usize::try_from(page / 64)
                .ok()
                .and_then(|w| words.get(w))
                .map(|w| w.fetch_or(1 << (page % 64), Ordering::AcqRel)),
            Log::Shared(shared) => usize::try_from(page / 8)
                .ok()
                .and_then(|b| shared.bytes().get(b))
                .map(|b| u64::from(b.fetch_or(1 << (page % 8), Ordering::AcqRel))),
        };
        if set.is_none() {
            return;
        }
    }
}

/// The pages written since `start` or the last `take`, one bit per page of guest-physical
/// address space, and clears them. Empty for a shared log (its reader clears it).
pub fn take() -> Vec<u64> {
    match &*log() {
        Log::Own(words) => words.iter().map(|w| w.swap(0, Ordering::AcqRel)).collect(),
        Log::Shared(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Bytes(Arc<Vec<AtomicU8>>);

    impl SharedLog for Bytes {
        fn bytes(&self) -> &[AtomicU8] {
            &self.0
        }
    }

    // One test: the log is one per process, and tests run in parallel threads.
    #[test]
    fn writes_are_logged_only_while_on_own_or_shared() {
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

        let shared = Arc::new((0..4).map(|_| AtomicU8::new(0)).collect::<Vec<_>>());
        start_shared(Box::new(Bytes(shared.clone())));
        mark(0x1fff, 2); // pages 1 and 2: byte 0
        mark(9 * PAGE_SIZE, 1); // page 9: byte 1, bit 1
        mark(32 * PAGE_SIZE, 1); // beyond the 32 pages the log covers
        assert!(take().is_empty(), "the frontend reads a shared log");
        let seen: Vec<u8> = shared.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        assert_eq!(seen, [0b110, 0b10, 0, 0]);
        stop();
        mark(0, 1);
        assert_eq!(shared[0].load(Ordering::Relaxed), 0b110);
    }
}
