//! Which guest pages were written since the last look: KVM's dirty page log over the VM's
//! memory slots (`KVM_MEM_LOG_DIRTY_PAGES`, `KVM_GET_DIRTY_LOG`) for the vCPUs' writes,
//! and [`dirty_log`] for the writes of the VMM's device models and instruction emulator.
//! The slots are the guest memory regions in order, as the builder registers them.

use arch::GuestMemory;
use kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::MigrationError;

/// The page size of KVM's dirty bitmaps on x86-64.
pub const PAGE_SIZE: u64 = 4096;

fn set_logging(vm: &VmFd, mem: &GuestMemory, on: bool) -> Result<(), MigrationError> {
    let flags = if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 };
    crate::memory_slots::set_memory_slots(vm, mem, flags).map_err(|source| MigrationError::Kvm {
        what: "KVM_SET_USER_MEMORY_REGION (dirty logging)",
        source,
    })
}

/// Dirty logging, on while this lives (turned off again when dropped).
pub struct DirtyLog<'a> {
    vm: &'a VmFd,
    mem: &'a GuestMemory,
}

impl<'a> DirtyLog<'a> {
    /// Starts logging the vCPUs' writes to every slot.
    pub fn start(vm: &'a VmFd, mem: &'a GuestMemory) -> Result<Self, MigrationError> {
        let end = mem
            .iter()
            .map(|r| r.start_addr().0 + r.len())
            .max()
            .unwrap_or(0);
        dirty_log::start(end);
        if let Err(e) = set_logging(vm, mem, true) {
            dirty_log::stop();
            return Err(e);
        }
        Ok(Self { vm, mem })
    }

    /// Per region (in slot order), the bitmap of pages written since the last call (or
    /// since `start`), one bit per page, and clears it.
    pub fn take(&self) -> Result<Vec<Vec<u64>>, MigrationError> {
        // The VMM's own writes first: a page written after this is in the next look.
        let device = dirty_log::take();
        let mut maps = self.take_kvm()?;
        add_device_writes(self.mem, &mut maps, &device);
        Ok(maps)
    }

    fn take_kvm(&self) -> Result<Vec<Vec<u64>>, MigrationError> {
        self.mem
            .iter()
            .enumerate()
            .map(|(slot, region)| {
                self.vm
                    .get_dirty_log(slot as u32, region.len() as usize)
                    .map_err(|source| MigrationError::Kvm {
                        what: "KVM_GET_DIRTY_LOG",
                        source,
                    })
            })
            .collect()
    }
}

/// Adds the guest-physical page bits of `device` to each region's bitmap in `maps`.
fn add_device_writes(mem: &GuestMemory, maps: &mut [Vec<u64>], device: &[u64]) {
    for (map, region) in maps.iter_mut().zip(mem.iter()) {
        let first = region.start_addr().0 / PAGE_SIZE;
        let pages = region.len().div_ceil(PAGE_SIZE);
        let words = usize::try_from(pages.div_ceil(64)).unwrap_or(usize::MAX);
        if map.len() < words {
            map.resize(words, 0);
        }
        for page in (0..pages).filter(|&p| is_set(device, first + p)) {
            if let Some(word) = map.get_mut((page / 64) as usize) {
                *word |= 1 << (page % 64);
            }
        }
    }
}

impl Drop for DirtyLog<'_> {
    fn drop(&mut self) {
        dirty_log::stop();
        if let Err(e) = set_logging(self.vm, self.mem, false) {
            tracing::warn!("turning dirty page logging off: {e}");
        }
    }
}

/// Pages set in `bitmap`.
pub fn count(bitmaps: &[Vec<u64>]) -> u64 {
    bitmaps
        .iter()
        .flatten()
        .map(|w| u64::from(w.count_ones()))
        .sum()
}

/// Whether page `page` is set in `bitmap` (pages past its end are not).
pub fn is_set(bitmap: &[u64], page: u64) -> bool {
    let word = usize::try_from(page / 64).unwrap_or(usize::MAX);
    bitmap
        .get(word)
        .is_some_and(|w| w & (1 << (page % 64)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_writes_land_in_their_regions_bitmaps() {
        let mem = GuestMemory::from_ranges(&[
            (vm_memory::GuestAddress(0), 0x10000),
            (vm_memory::GuestAddress(0x100000), 0x10000),
        ])
        .unwrap();
        let mut maps = vec![vec![0b1], vec![]];
        // Pages 3 (region 0) and 0x102 (page 2 of region 1).
        let mut device = vec![0u64; 5];
        device[0] = 1 << 3;
        device[0x102 / 64] |= 1 << (0x102 % 64);
        add_device_writes(&mem, &mut maps, &device);
        assert_eq!(maps[0], vec![0b1001]);
        assert_eq!(maps[1], vec![0b100]);
    }

    #[test]
    fn bitmaps_count_and_answer() {
        let maps = vec![vec![0b1011, 0], vec![1 << 63]];
        assert_eq!(count(&maps), 4);
        assert!(is_set(&maps[0], 0) && is_set(&maps[0], 3) && !is_set(&maps[0], 2));
        assert!(is_set(&maps[1], 63) && !is_set(&maps[1], 64) && !is_set(&maps[1], 1 << 40));
    }
}
