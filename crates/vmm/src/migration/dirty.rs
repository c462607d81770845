//! KVM's dirty page log over the VM's memory slots (`KVM_MEM_LOG_DIRTY_PAGES`,
//! `KVM_GET_DIRTY_LOG`): which pages the vCPUs wrote since the last look. The slots are
//! the guest memory regions in order, as `Vm::build` registers them.

use arch::GuestMemory;
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::MigrationError;

/// The page size of KVM's dirty bitmaps on x86-64.
pub const PAGE_SIZE: u64 = 4096;

fn set_logging(vm: &VmFd, mem: &GuestMemory, on: bool) -> Result<(), MigrationError> {
    for (slot, region) in mem.iter().enumerate() {
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            flags: if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
        };
        // SAFETY: the same slot, address and host mapping `Vm::build` registered (the
        // mapping lives as long as `mem`, which the VM keeps); only the flags change.
        unsafe { vm.set_user_memory_region(desc) }.map_err(|source| MigrationError::Kvm {
            what: "KVM_SET_USER_MEMORY_REGION (dirty logging)",
            source,
        })?;
    }
    Ok(())
}

/// Dirty logging, on while this lives (turned off again when dropped).
pub struct DirtyLog<'a> {
    vm: &'a VmFd,
    mem: &'a GuestMemory,
}

impl<'a> DirtyLog<'a> {
    /// Starts logging the vCPUs' writes to every slot.
    pub fn start(vm: &'a VmFd, mem: &'a GuestMemory) -> Result<Self, MigrationError> {
        set_logging(vm, mem, true)?;
        Ok(Self { vm, mem })
    }

    /// Per region (in slot order), the bitmap of pages written since the last call (or
    /// since `start`), one bit per page, and clears it.
    pub fn take(&self) -> Result<Vec<Vec<u64>>, MigrationError> {
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

impl Drop for DirtyLog<'_> {
    fn drop(&mut self) {
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
    fn bitmaps_count_and_answer() {
        let maps = vec![vec![0b1011, 0], vec![1 << 63]];
        assert_eq!(count(&maps), 4);
        assert!(is_set(&maps[0], 0) && is_set(&maps[0], 3) && !is_set(&maps[0], 2));
        assert!(is_set(&maps[1], 63) && !is_set(&maps[1], 64) && !is_set(&maps[1], 1 << 40));
    }
}
