//! The frontend's guest memory: the SET_MEM_TABLE regions mapped from the fds it sent,
//! and the table from the frontend's virtual addresses to guest physical addresses that
//! SET_VRING_ADDR needs (ring addresses come as frontend virtual addresses).
//!
//! Every region is checked before it is mapped: non-empty, no address wrap-around, a
//! page-aligned file offset, a regular file (or memfd) long enough to back the whole
//! region (a mapping past the end of its file would fault on access), and no overlap
//! with another region in either address space.
//!
//! The file must also be sealed against shrinking (`F_SEAL_SHRINK`): otherwise the
//! frontend could truncate it after the table is accepted and the backend would die of
//! SIGBUS on its next access to guest memory. QEMU's `memory-backend-memfd` seals by
//! default (`seal=on`); plain files (`memory-backend-file`, hugetlbfs paths) cannot be
//! sealed and are refused. libvhost-user and the rust-vmm backends map without this
//! check; vessel prefers a clear refusal to a SIGBUS handler around every access.

use std::fs::File;
use std::os::fd::AsRawFd;

use vhost::vhost_user::message::VhostUserMemoryRegion;
use vm_memory::mmap::MmapRegionError;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap, MmapRegion,
};

/// Most regions one table may hold (the vhost crate's limit of fds per message).
pub const MAX_REGIONS: usize = vhost::vhost_user::message::MAX_ATTACHED_FD_ENTRIES;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memory table is empty or has more than {MAX_REGIONS} regions")]
    RegionCount,
    #[error("{regions} memory regions but {fds} file descriptors")]
    FdCount { regions: usize, fds: usize },
    #[error("region {0}: zero size, or its addresses wrap around")]
    BadRegion(usize),
    #[error("region {index}: mmap offset {offset:#x} is not page aligned")]
    Unaligned { index: usize, offset: u64 },
    #[error("region {index}: its file cannot be inspected: {source}")]
    Stat {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("region {0}: its fd is not a regular file or memfd")]
    NotAFile(usize),
    #[error(
        "region {0}: its file is not sealed against shrinking (F_SEAL_SHRINK), so the \
         frontend could truncate it under the backend; share guest memory through a sealed \
         memfd (QEMU: memory-backend-memfd, which seals by default)"
    )]
    NotSealed(usize),
    #[error(
        "region {index}: {offset:#x}+{size:#x} goes past the end of its {file_len:#x}-byte file"
    )]
    PastEnd {
        index: usize,
        offset: u64,
        size: u64,
        file_len: u64,
    },
    #[error("region {0} is larger than this host can map")]
    TooLarge(usize),
    #[error("regions {0} and {1} overlap in guest physical memory")]
    GuestOverlap(usize, usize),
    #[error("regions {0} and {1} overlap in the frontend's address space")]
    FrontendOverlap(usize, usize),
    #[error("region {index}: mmap failed: {source}")]
    Map {
        index: usize,
        #[source]
        source: MmapRegionError,
    },
    #[error("guest memory layout: {0}")]
    Layout(#[from] vm_memory::GuestRegionCollectionError),
}

/// Where one region lives in both address spaces.
#[derive(Debug, Clone, Copy)]
struct RegionAddrs {
    frontend_addr: u64,
    guest_addr: u64,
    size: u64,
}

/// Mapped guest memory of one frontend connection. Dropping it unmaps everything.
pub struct GuestRam {
    memory: GuestMemoryMmap,
    regions: Vec<RegionAddrs>,
}

pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096).max(1)
}

/// Whether `file` carries `F_SEAL_SHRINK` (files that do not support seals do not).
pub(crate) fn sealed_against_shrinking(file: &File) -> bool {
    // SAFETY: F_GET_SEALS on a descriptor `file` owns; no memory is passed.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & libc::F_SEAL_SHRINK != 0
}

/// Index pairs of the first two overlapping ranges among `(start, len, index)`.
fn first_overlap(mut ranges: Vec<(u64, u64, usize)>) -> Option<(usize, usize)> {
    ranges.sort_unstable();
    ranges
        .windows(2)
        // Lengths are non-zero and `start + len` does not wrap (checked before).
        .find(|w| w[0].0 + w[0].1 > w[1].0)
        .map(|w| (w[0].2, w[1].2))
}

impl GuestRam {
    /// Check and map `regions`, region `i` from `files[i]` at its `mmap_offset`.
    pub fn map(regions: &[VhostUserMemoryRegion], files: Vec<File>) -> Result<Self, MemoryError> {
        if regions.is_empty() || regions.len() > MAX_REGIONS {
            return Err(MemoryError::RegionCount);
        }
        if files.len() != regions.len() {
            return Err(MemoryError::FdCount {
                regions: regions.len(),
                fds: files.len(),
            });
        }
        let page = page_size();
        let mut addrs = Vec::with_capacity(regions.len());
        for (index, r) in regions.iter().enumerate() {
            let (size, offset) = (r.memory_size, r.mmap_offset);
            let wraps = r.guest_phys_addr.checked_add(size).is_none()
                || r.user_addr.checked_add(size).is_none()
                || offset.checked_add(size).is_none();
            if size == 0 || wraps {
                return Err(MemoryError::BadRegion(index));
            }
            if offset % page != 0 {
                return Err(MemoryError::Unaligned { index, offset });
            }
            addrs.push(RegionAddrs {
                frontend_addr: r.user_addr,
                guest_addr: r.guest_phys_addr,
                size,
            });
        }
        let by_guest = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (a.guest_addr, a.size, i))
            .collect();
        if let Some((a, b)) = first_overlap(by_guest) {
            return Err(MemoryError::GuestOverlap(a, b));
        }
        let by_frontend = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (a.frontend_addr, a.size, i))
            .collect();
        if let Some((a, b)) = first_overlap(by_frontend) {
            return Err(MemoryError::FrontendOverlap(a, b));
        }

        let mut mapped = Vec::with_capacity(regions.len());
        for (index, (file, a)) in files.into_iter().zip(&addrs).enumerate() {
            let offset = regions[index].mmap_offset;
            let meta = file
                .metadata()
                .map_err(|source| MemoryError::Stat { index, source })?;
            if !meta.is_file() {
                return Err(MemoryError::NotAFile(index));
            }
            if !sealed_against_shrinking(&file) {
                return Err(MemoryError::NotSealed(index));
            }
            // offset + size does not wrap (checked above).
            if offset + a.size > meta.len() {
                return Err(MemoryError::PastEnd {
                    index,
                    offset,
                    size: a.size,
                    file_len: meta.len(),
                });
            }
            let len = usize::try_from(a.size).map_err(|_| MemoryError::TooLarge(index))?;
            let mapping = MmapRegion::from_file(FileOffset::new(file, offset), len)
                .map_err(|source| MemoryError::Map { index, source })?;
            let region = GuestRegionMmap::new(mapping, GuestAddress(a.guest_addr))
                .ok_or(MemoryError::BadRegion(index))?;
            mapped.push(region);
        }
        mapped.sort_by_key(|r| r.start_addr());
        let memory = GuestMemoryMmap::from_regions(mapped)?;
        Ok(Self {
            memory,
            regions: addrs,
        })
    }

    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The guest physical address of frontend virtual address `addr`, if a region holds it.
    pub fn guest_addr(&self, addr: u64) -> Option<u64> {
        self.regions
            .iter()
            .find(|r| addr >= r.frontend_addr && addr - r.frontend_addr < r.size)
            .map(|r| r.guest_addr + (addr - r.frontend_addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    use crate::tests::{memfd, unsealed_memfd};

    fn region(gpa: u64, size: u64, va: u64, offset: u64) -> VhostUserMemoryRegion {
        VhostUserMemoryRegion::new(gpa, size, va, offset)
    }

    #[test]
    fn maps_regions_and_translates() {
        let file = memfd(0x4000);
        let regions = [
            region(0, 0x2000, 0x7000_0000, 0),
            region(0x10_0000, 0x2000, 0x7000_2000, 0x2000),
        ];
        let files = vec![file.try_clone().unwrap(), file.try_clone().unwrap()];
        let ram = GuestRam::map(&regions, files).unwrap();
        assert_eq!(ram.guest_addr(0x7000_0010), Some(0x10));
        assert_eq!(ram.guest_addr(0x7000_2010), Some(0x10_0010));
        assert_eq!(ram.guest_addr(0x7000_4000), None);
        ram.memory()
            .write_obj(0xabcdu16, GuestAddress(0x10_0000))
            .unwrap();
        // Shared with the file: the second region starts at offset 0x2000.
        let other = GuestRam::map(&regions[..1], vec![file.try_clone().unwrap()]).unwrap();
        assert!(other.memory().read_obj::<u16>(GuestAddress(0)).is_ok());
        let mut buf = [0u8; 2];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 0x2000).unwrap();
        assert_eq!(u16::from_le_bytes(buf), 0xabcd);
    }

    #[test]
    fn hostile_tables_are_refused() {
        let f = || memfd(0x4000);
        let one = |r: VhostUserMemoryRegion| GuestRam::map(&[r], vec![f()]);
        assert!(matches!(
            one(region(0, 0x8000, 0, 0)),
            Err(MemoryError::PastEnd { .. })
        ));
        assert!(matches!(
            one(region(0, 0x1000, 0, 0x3001)),
            Err(MemoryError::Unaligned { .. })
        ));
        assert!(matches!(
            one(region(0, 0, 0, 0)),
            Err(MemoryError::BadRegion(0))
        ));
        assert!(matches!(
            one(region(u64::MAX - 0xfff, 0x2000, 0, 0)),
            Err(MemoryError::BadRegion(0))
        ));
        assert!(matches!(
            one(region(0, 0x1000, 0, !0xfff)),
            Err(MemoryError::BadRegion(0))
        ));
        let overlap_gpa = [region(0, 0x2000, 0, 0), region(0x1000, 0x1000, 0x10000, 0)];
        assert!(matches!(
            GuestRam::map(&overlap_gpa, vec![f(), f()]),
            Err(MemoryError::GuestOverlap(..))
        ));
        let overlap_va = [region(0, 0x1000, 0, 0), region(0x1000, 0x1000, 0x800, 0)];
        assert!(matches!(
            GuestRam::map(&overlap_va, vec![f(), f()]),
            Err(MemoryError::FrontendOverlap(..))
        ));
        assert!(matches!(
            GuestRam::map(&overlap_va, vec![f()]),
            Err(MemoryError::FdCount { .. })
        ));
        let dir = std::fs::File::open("/").unwrap();
        assert!(matches!(
            GuestRam::map(&[region(0, 0x1000, 0, 0)], vec![dir]),
            Err(MemoryError::NotAFile(0))
        ));
    }

    #[test]
    fn files_that_may_shrink_are_refused() {
        let r = [region(0, 0x1000, 0, 0)];
        let err = GuestRam::map(&r, vec![unsealed_memfd(0x4000)])
            .err()
            .unwrap();
        assert!(matches!(err, MemoryError::NotSealed(0)), "{err}");
        assert!(err.to_string().contains("F_SEAL_SHRINK"), "{err}");
        // A plain file cannot be sealed at all.
        let plain = tempfile::tempfile().unwrap();
        plain.set_len(0x4000).unwrap();
        assert!(matches!(
            GuestRam::map(&r, vec![plain]),
            Err(MemoryError::NotSealed(0))
        ));
        // The sealed memfd cannot shrink under the mapping.
        let sealed = memfd(0x4000);
        let ram = GuestRam::map(&r, vec![sealed.try_clone().unwrap()]).unwrap();
        assert!(sealed.set_len(0).is_err());
        assert!(ram.memory().read_obj::<u64>(GuestAddress(0x800)).is_ok());
    }
}
