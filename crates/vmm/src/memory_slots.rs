//! Guest RAM as KVM memory slots: region N of the guest memory is slot N, as the builder
//! registers it and as dirty logging for migration re-registers it with another flag.

use arch::GuestMemory;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

/// Gives KVM every region of `mem` as slots 0, 1, … with `flags` (0, or
/// `KVM_MEM_LOG_DIRTY_PAGES`); registering a slot again changes its flags.
///
/// `mem` must stay mapped for as long as the KVM VM exists: the `Vm` keeps both and joins
/// its vCPU threads before dropping either.
pub(crate) fn set_memory_slots(
    vm: &VmFd,
    mem: &GuestMemory,
    flags: u32,
) -> Result<(), kvm_ioctls::Error> {
    for (slot, region) in mem.iter().enumerate() {
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            flags,
        };
        // SAFETY: the host mapping described belongs to `mem`, which the caller keeps
        // mapped for as long as the KVM VM exists (see above).
        unsafe { vm.set_user_memory_region(desc) }?;
    }
    Ok(())
}
