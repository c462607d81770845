//! Which pages of private anonymous guest memory were ever touched, from
//! /proc/self/pagemap: a page that is neither present nor swapped out was never written
//! (nor read), so it reads as zeros. A migration's first copy and a snapshot's memory file
//! skip such pages without reading them; reading would fault each one in, which for a
//! mostly idle guest of a few GiB costs more than the copy itself. For RAM mapped from a
//! file (a snapshot's memory file, copy-on-write), a page that is not present still holds
//! the file's data: [`touched_pages`] adds the file's data extents (`SEEK_DATA`), so only
//! pages over the file's holes that the guest never touched are skipped.
//!
//! The file is opened when the VM is built, before the VMM is confined; reads are
//! `pread`s on it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
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

/// The pages of `region` that may hold data, when `map` can tell; `None`: every page must
/// be read.
pub(crate) fn touched_pages<B: vm_memory::bitmap::Bitmap>(
    map: Option<&PageMap>,
    region: &GuestRegionMmap<B>,
) -> Option<Vec<u64>> {
    let pages = region.len().div_ceil(PAGE_SIZE);
    let bits = map?
        .touched(region.as_ptr() as u64, pages)
        .and_then(|mut bits| {
            if let Some(backing) = region.file_offset() {
                mark_file_data(backing.file(), backing.start(), region.len(), &mut bits)?;
            }
            Ok(bits)
        });
    match bits {
        Ok(bits) => Some(bits),
        Err(e) => {
            tracing::warn!("reading the page map: {e}; every page is read");
            None
        }
    }
}

/// Sets in `bits` the pages of a mapping of `len` bytes of `file` from `start` that lie
/// over data in the file (its extents, as `SEEK_DATA`/`SEEK_HOLE` report them). A file
/// system without holes reports all of it as data.
fn mark_file_data(file: &File, start: u64, len: u64, bits: &mut [u64]) -> io::Result<()> {
    let end = start.checked_add(len).ok_or(io::ErrorKind::InvalidInput)?;
    let seek = |from: u64, whence: i32| -> io::Result<Option<u64>> {
        let from = i64::try_from(from).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: lseek on a descriptor the mapping's `File` owns; it touches no memory.
        // Only the descriptor's position changes, which nothing else uses (it backs mmap).
        match unsafe { libc::lseek(file.as_raw_fd(), from, whence) } {
            -1 => match io::Error::last_os_error() {
                // No data at or after `from`.
                e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
                e => Err(e),
            },
            at => Ok(Some(at as u64)),
        }
    };
    let mut pos = start;
    while pos < end {
        let Some(data) = seek(pos, libc::SEEK_DATA)?.filter(|&d| d < end) else {
            break;
        };
        let hole = seek(data, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
        if hole <= data {
            return Err(io::ErrorKind::InvalidData.into());
        }
        for page in (data - start) / PAGE_SIZE..=(hole - start - 1) / PAGE_SIZE {
            if let Some(word) = bits.get_mut((page / 64) as usize) {
                *word |= 1 << (page % 64);
            }
        }
        pos = hole;
    }
    Ok(())
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

    #[test]
    fn a_file_mappings_data_extents_count_and_its_holes_do_not() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::create(dir.path().join("mem")).unwrap();
        // 64 pages: data in pages 5 and 40..42, holes elsewhere.
        file.set_len(64 * PAGE_SIZE).unwrap();
        for (at, len) in [(5 * PAGE_SIZE + 100, 10), (40 * PAGE_SIZE, 2 * PAGE_SIZE)] {
            file.seek(SeekFrom::Start(at)).unwrap();
            file.write_all(&vec![7u8; len as usize]).unwrap();
        }
        file.sync_all().unwrap();
        let mut bits = vec![0u64; 1];
        // The mapping starts 4 pages into the file.
        mark_file_data(&file, 4 * PAGE_SIZE, 60 * PAGE_SIZE, &mut bits).unwrap();
        let marked: Vec<u64> = (0..60).filter(|&p| is_touched(&bits, p)).collect();
        // A file system may round extents outwards (never inwards): the data pages are in.
        for page in [1, 36, 37] {
            assert!(marked.contains(&page), "{marked:?}");
        }
        assert!(marked.len() < 60, "holes were reported as data: {marked:?}");
    }
}
