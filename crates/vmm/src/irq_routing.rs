//! Interrupt delivery from devices to the guest: KVM GSI routing (the in-kernel PIC/IOAPIC
//! defaults plus one MSI route per device vector), MSI-X vectors as irqfds, and INTx lines
//! as IOAPIC pins.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use arch::layout::IOAPIC_PINS;
use pci::{IntxLine, MsiInterrupt, MsiMessage};

#[derive(Debug, thiserror::Error)]
pub enum IrqError {
    #[error("no free GSI for an MSI vector (all {0} in use)")]
    Exhausted(u32),
    #[error("KVM_SET_GSI_ROUTING: {0}")]
    SetRouting(#[source] kvm_ioctls::Error),
    #[error("KVM_IRQFD: {0}")]
    Irqfd(#[source] kvm_ioctls::Error),
    #[error("eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// Highest GSI vessel hands out (KVM supports at least 1024 routes).
const MAX_GSI: u32 = 1023;

/// The VM's GSI routing table. KVM_SET_GSI_ROUTING replaces the whole table, so every
/// change rewrites it from this copy.
pub struct GsiRouter {
    vm: Arc<VmFd>,
    msi_routes: Mutex<BTreeMap<u32, Option<MsiMessage>>>,
}

impl GsiRouter {
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self {
            vm,
            msi_routes: Mutex::new(BTreeMap::new()),
        }
    }

    /// The routes KVM sets up with its in-kernel irqchip: GSIs 0-15 to the PICs and the
    /// IOAPIC, 16-23 to the IOAPIC only.
    fn irqchip_routes() -> Vec<kvm_irq_routing_entry> {
        let mut v = Vec::new();
        for gsi in 0..IOAPIC_PINS {
            if gsi < 16 {
                let (chip, pin) = if gsi < 8 {
                    (KVM_IRQCHIP_PIC_MASTER, gsi)
                } else {
                    (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
                };
                v.push(irqchip_route(gsi, chip, pin));
            }
            v.push(irqchip_route(gsi, KVM_IRQCHIP_IOAPIC, gsi));
        }
        v
    }

    /// Reserve a GSI for an MSI vector (routed nowhere until [`GsiRouter::set_msi`]).
    pub fn allocate(&self) -> Result<u32, IrqError> {
        let mut routes = self.msi_routes.lock().unwrap_or_else(|p| p.into_inner());
        let gsi = (IOAPIC_PINS..=MAX_GSI)
            .find(|g| !routes.contains_key(g))
            .ok_or(IrqError::Exhausted(MAX_GSI))?;
        routes.insert(gsi, None);
        Ok(gsi)
    }

    /// Point `gsi` at an MSI message (`None`: no route) and update KVM.
    pub fn set_msi(&self, gsi: u32, msg: Option<MsiMessage>) -> Result<(), IrqError> {
        let mut routes = self.msi_routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.insert(gsi, msg);
        let mut entries = Self::irqchip_routes();
        for (&gsi, msg) in routes.iter() {
            if let Some(m) = msg {
                let mut e = kvm_irq_routing_entry {
                    gsi,
                    type_: KVM_IRQ_ROUTING_MSI,
                    ..Default::default()
                };
                e.u.msi.address_lo = m.address as u32;
                e.u.msi.address_hi = (m.address >> 32) as u32;
                e.u.msi.data = m.data;
                entries.push(e);
            }
        }
        let table =
            KvmIrqRouting::from_entries(&entries).map_err(|_| IrqError::Exhausted(MAX_GSI))?;
        self.vm
            .set_gsi_routing(&table)
            .map_err(IrqError::SetRouting)
    }
}

fn irqchip_route(gsi: u32, irqchip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = irqchip;
    e.u.irqchip.pin = pin;
    e
}

/// The MSI-X vectors of one device: a GSI and an irqfd each.
///
/// An irqfd is attached to KVM only while its vector is unmasked: a device served by
/// another process (vhost-user) writes the irqfd directly, and a masked vector must hold
/// that interrupt pending. Detached, the eventfd's counter keeps the writes; KVM delivers
/// them when the irqfd is attached again (KVM_IRQFD checks for a pending count).
pub struct KvmMsiVectors {
    router: Arc<GsiRouter>,
    vm: Arc<VmFd>,
    vectors: Vec<MsiVector>,
}

struct MsiVector {
    gsi: u32,
    irqfd: EventFd,
    attached: Mutex<bool>,
}

impl KvmMsiVectors {
    pub fn new(router: Arc<GsiRouter>, vm: &Arc<VmFd>, count: u16) -> Result<Self, IrqError> {
        let mut vectors = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let gsi = router.allocate()?;
            let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(IrqError::EventFd)?;
            // Every vector is masked after reset: attached on its first unmask.
            vectors.push(MsiVector {
                gsi,
                irqfd,
                attached: Mutex::new(false),
            });
        }
        Ok(Self {
            router,
            vm: vm.clone(),
            vectors,
        })
    }

    /// Attach (unmasked) or detach (masked) the vector's irqfd.
    fn attach(&self, v: &MsiVector, masked: bool) -> Result<(), IrqError> {
        let mut attached = v.attached.lock().unwrap_or_else(|p| p.into_inner());
        if *attached != masked {
            return Ok(());
        }
        if masked {
            self.vm
                .unregister_irqfd(&v.irqfd, v.gsi)
                .map_err(IrqError::Irqfd)?;
        } else {
            self.vm
                .register_irqfd(&v.irqfd, v.gsi)
                .map_err(IrqError::Irqfd)?;
        }
        *attached = !masked;
        Ok(())
    }
}

impl MsiInterrupt for KvmMsiVectors {
    fn update(&self, vector: u16, msg: MsiMessage, masked: bool) {
        let Some(v) = self.vectors.get(usize::from(vector)) else {
            return;
        };
        if let Err(e) = self.router.set_msi(v.gsi, Some(msg)) {
            warn(&format!("MSI-X vector {vector}: {e}"));
        }
        if let Err(e) = self.attach(v, masked) {
            warn(&format!("MSI-X vector {vector}: {e}"));
        }
    }

    fn trigger(&self, vector: u16) {
        if let Some(v) = self.vectors.get(usize::from(vector)) {
            // The counter cannot overflow in practice; a full counter still interrupts.
            let _ = v.irqfd.write(1);
        }
    }

    fn irqfd(&self, vector: u16) -> Option<&EventFd> {
        self.vectors.get(usize::from(vector)).map(|v| &v.irqfd)
    }
}

/// INTx pin A of a slot: a level on an IOAPIC pin.
pub struct KvmIntx {
    pub vm: Arc<VmFd>,
    pub gsi: u32,
}

impl IntxLine for KvmIntx {
    fn set_level(&self, asserted: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, asserted) {
            warn(&format!("INTx GSI {}: {e}", self.gsi));
        }
    }
}

fn warn(msg: &str) {
    tracing::warn!("{msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_cover_pic_and_ioapic() {
        let r = GsiRouter::irqchip_routes();
        assert_eq!(r.len(), 16 + 24);
        let pins: Vec<(u32, u32, u32)> = r
            .iter()
            // SAFETY: entries built by irqchip_route use the irqchip union member.
            .map(|e| unsafe { (e.gsi, e.u.irqchip.irqchip, e.u.irqchip.pin) })
            .collect();
        assert!(pins.contains(&(9, KVM_IRQCHIP_PIC_SLAVE, 1)));
        assert!(pins.contains(&(20, KVM_IRQCHIP_IOAPIC, 20)));
    }
}
