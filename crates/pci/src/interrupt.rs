//! The host side of device interrupts, implemented by the VMM.

/// One MSI message as programmed by the guest in an MSI-X table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// Delivers MSI-X vectors of one device. The VMM implements it with one irqfd and one GSI
/// route per vector (KVM_IRQFD + KVM_SET_GSI_ROUTING).
pub trait MsiInterrupt: Send + Sync {
    /// The guest changed a vector's message or its effective mask (entry mask, function
    /// mask or MSI-X enable). Called from the vCPU thread doing the config/BAR access.
    fn update(&self, vector: u16, msg: MsiMessage, masked: bool);
    /// Fire `vector` now. Only called for enabled, unmasked vectors; must not block
    /// (an eventfd write).
    fn trigger(&self, vector: u16);
    /// The eventfd whose write fires `vector` (a KVM irqfd), for a device served by another
    /// process (vhost-user), which then signals the guest without going through the VMM.
    /// While the vector is masked, writes must stay pending until it is unmasked.
    /// `None` when vectors are not delivered through eventfds.
    fn irqfd(&self, _vector: u16) -> Option<&vmm_sys_util::eventfd::EventFd> {
        None
    }
}

/// A level-triggered legacy interrupt line (INTx pin A), which the VMM maps to an IOAPIC
/// GSI (KVM_IRQ_LINE, or an irqfd with a resample fd).
pub trait IntxLine: Send + Sync {
    fn set_level(&self, asserted: bool);
}
