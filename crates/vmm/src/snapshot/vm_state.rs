//! VM-wide KVM state: the in-kernel PICs and IOAPIC, the PIT when the VM has one, and the
//! kvmclock.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::SnapshotError;

#[derive(Clone, Serialize, Deserialize)]
pub struct VmState {
    #[serde(with = "super::bytes")]
    pub pic_master: kvm_irqchip,
    #[serde(with = "super::bytes")]
    pub pic_slave: kvm_irqchip,
    #[serde(with = "super::bytes")]
    pub ioapic: kvm_irqchip,
    /// Present exactly when the VM has KVM's PIT.
    pub pit: Option<PitState>,
    #[serde(with = "super::bytes")]
    pub clock: kvm_clock_data,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct PitState(#[serde(with = "super::bytes")] pub kvm_pit_state2);

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::VmKvm { what, source }
}

fn get_chip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, SnapshotError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(kvm_err("KVM_GET_IRQCHIP"))?;
    Ok(chip)
}

impl VmState {
    pub fn save(vm: &VmFd, with_pit: bool) -> Result<Self, SnapshotError> {
        let pit = if with_pit {
            Some(PitState(vm.get_pit2().map_err(kvm_err("KVM_GET_PIT2"))?))
        } else {
            None
        };
        let mut clock = vm.get_clock().map_err(kvm_err("KVM_GET_CLOCK"))?;
        // KVM_SET_CLOCK takes no flags from KVM_GET_CLOCK's (TSC_STABLE is read-only).
        clock.flags = 0;
        Ok(VmState {
            pic_master: get_chip(vm, KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: get_chip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: get_chip(vm, KVM_IRQCHIP_IOAPIC)?,
            pit,
            clock,
        })
    }

    /// The chip ids must be the ones KVM_GET_IRQCHIP filled in (the file is untrusted).
    pub fn validate(&self) -> Result<(), SnapshotError> {
        let ids = [
            (self.pic_master.chip_id, KVM_IRQCHIP_PIC_MASTER),
            (self.pic_slave.chip_id, KVM_IRQCHIP_PIC_SLAVE),
            (self.ioapic.chip_id, KVM_IRQCHIP_IOAPIC),
        ];
        for (found, want) in ids {
            if found != want {
                return Err(SnapshotError::Invalid(format!(
                    "irqchip {want} is saved with chip id {found}"
                )));
            }
        }
        Ok(())
    }

    pub fn restore(&self, vm: &VmFd) -> Result<(), SnapshotError> {
        self.validate()?;
        if let Some(pit) = &self.pit {
            vm.set_pit2(&pit.0).map_err(kvm_err("KVM_SET_PIT2"))?;
        }
        let mut clock = self.clock;
        clock.flags = 0;
        vm.set_clock(&clock).map_err(kvm_err("KVM_SET_CLOCK"))?;
        for chip in [&self.pic_master, &self.pic_slave, &self.ioapic] {
            vm.set_irqchip(chip).map_err(kvm_err("KVM_SET_IRQCHIP"))?;
        }
        Ok(())
    }
}
