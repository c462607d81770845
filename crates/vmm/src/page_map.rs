//! Which pages of private anonymous guest memory were ever touched, from
//! /proc/self/pagemap: a page that is neither present nor swapped out was never written
//! (nor read), so it reads as zeros. A migration's first copy and a snapshot's memory file
//! skip such pages without reading them; reading would fault each one in, which for a
//! mostly idle guest of a few GiB costs more than the copy itself. Not for file mappings (a
//! page of one that is not present still holds the file's data): [`touched_pages`] checks
//! the region.
//!
//! The file is opened when the VM is built, before the VMM is confined; reads are
//! `pread`s on it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use vm_memory::{GuestMemoryRegion, GuestRegionMmap};

/// The page size the map and its bitmaps count in.
pub(crate) const PAGE_SIZE: u64 = 4096;

/// Bytes per page map entry.
const ENTRY_BYTES: u64 = 8;
/// The entry's bits that say the page has content: present in RAM, or swapped out.
const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
/// Entries read per `pread` (512 KiB).
const BATCH: u64 = 64 * 1024;

/// This process's page map.
pub(crate) struct PageMap(File);

impl PageMap {
    /// `None` where it cannot be read (no /proc): callers then read every page.
    pub(crate) fn open() -> Option<Self> {
        File::open("/proc/self/pagemap").ok().map(Self)
    }

    /// One bit per page (as the dirty bitmaps have them) for the `pages` pages from host
    /// address `addr` (page aligned): set when the page may hold something other than
    /// zeros.
    pub(crate) fn touched(&self, addr: u64, pages: u64) -> io::Result<Vec<u64>> {
        let mut bits = vec![0u64; pages.div_ceil(64) as usize];
        let mut buf = vec![0u8; (BATCH * ENTRY_BYTES) as usize];
        let mut page = 0;
        while page < pages {
            let n = (pages - page).min(BATCH);
            let entries = &mut buf[..(n * ENTRY_BYTES) as usize];
            self.0
                .read_exact_at(entries, (addr / PAGE_SIZE + page) * ENTRY_BYTES)?;
            for (i, entry) in entries.chunks_exact(ENTRY_BYTES as usize).enumerate() {
                // An entry that does not parse counts as touched: the page is read.
                let value = <[u8; 8]>::try_from(entry).map_or(u64::MAX, u64::from_ne_bytes);
                if value & (PRESENT | SWAPPED) != 0 {
                    let p = page + i as u64;
                    bits[(p / 64) as usize] |= 1 << (p % 64);
                }
            }
            page += n;
        }
        Ok(bits)
    }
}

/// Whether `page` is set in a bitmap [`PageMap::touched`] returned.
pub(crate) fn is_touched(bits: &[u64], page: u64) -> bool {
    bits.get((page / 64) as usize)
        .is_some_and(|w| w & (1 << (page % 64)) != 0)
}

/// The pages of `region` that may hold data, when `map` can tell (a private anonymous
/// region); `None`: every page must be read.
pub(crate) fn touched_pages<B: vm_memory::bitmap::Bitmap>(
    map: Option<&PageMap>,
    region: &GuestRegionMmap<B>,
) -> Option<Vec<u64>> {
    if region.file_offset().is_some() {
        return None;
    }
    match map?.touched(region.as_ptr() as u64, region.len().div_ceil(PAGE_SIZE)) {
        Ok(bits) => Some(bits),
        Err(e) => {
            tracing::warn!("reading the page map: {e}; every page is read");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pages_written_are_touched() {
        const PAGES: usize = 96;
        let len = PAGES * PAGE_SIZE as usize;
        // SAFETY: a new private anonymous mapping, unmapped below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        // Small pages only, so that one write makes one page present.
        // SAFETY: advice on the mapping just made.
        unsafe { libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE) };
        let bytes = ptr.cast::<u8>();
        for page in [3usize, 40, 95] {
            // SAFETY: inside the mapping.
            unsafe { bytes.add(page * PAGE_SIZE as usize + 17).write_volatile(1) };
        }
        let map = PageMap::open().expect("/proc/self/pagemap");
        let bits = map.touched(ptr as u64, PAGES as u64).unwrap();
        let touched: Vec<u64> = (0..PAGES as u64)
            .filter(|&p| is_touched(&bits, p))
            .collect();
        assert_eq!(touched, [3, 40, 95]);
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(ptr, len) };
    }
}
