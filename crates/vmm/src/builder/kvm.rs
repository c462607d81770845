//! The KVM side of a new VM: `/dev/kvm` with the capabilities vessel needs, the VM with its
//! TSS, identity map and in-kernel irqchip, guest RAM registered as memory slots, and the
//! optional PIT.

use std::sync::Arc;

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};

use arch::layout;
use arch::GuestMemory;

use crate::error::{kvm_err, VmError};

/// Capabilities without which vessel does not build a VM.
const REQUIRED_CAPS: [Cap; 7] = [
    Cap::Irqchip,
    Cap::Irqfd,
    Cap::Ioeventfd,
    Cap::UserMemory,
    Cap::SetTssAddr,
    Cap::ExtCpuid,
    Cap::ImmediateExit,
];

/// Opens `/dev/kvm`, checks its capabilities and that it allows `cpus` vCPUs.
pub(crate) fn open_kvm(cpus: u8) -> Result<Kvm, VmError> {
    let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
    if let Some(cap) = REQUIRED_CAPS.into_iter().find(|&c| !kvm.check_extension(c)) {
        return Err(VmError::MissingCapability(cap));
    }
    let max = kvm
        .get_max_vcpus()
        .min(usize::from(crate::config::MAX_CPUS));
    if usize::from(cpus) > max || cpus == 0 {
        return Err(VmError::TooManyCpus { cpus, max });
    }
    Ok(kvm)
}

/// The KVM VM with its TSS and identity-map pages and its in-kernel irqchip.
pub(crate) fn create_vm(kvm: &Kvm) -> Result<Arc<VmFd>, VmError> {
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    vm.set_tss_address(layout::KVM_TSS_ADDR as usize)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDR)
        .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    Ok(Arc::new(vm))
}

/// Gives KVM `mem`'s regions as memory slots 0, 1, … (the order dirty logging and
/// migration rely on).
pub(crate) fn register_memory(vm: &VmFd, mem: &GuestMemory) -> Result<(), VmError> {
    crate::memory_slots::set_memory_slots(vm, mem, 0).map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))
}

/// KVM's i8254 PIT, its speaker port a dummy; only when `wanted`.
pub(crate) fn create_pit(vm: &VmFd, wanted: bool) -> Result<(), VmError> {
    if wanted {
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
    }
    Ok(())
}
