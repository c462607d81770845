//! Devices whose queues another process serves (vhost-user: virtio-fs served by
//! virtiofsd). The PCI transport does not run such queues: at DRIVER_OK it hands each
//! enabled queue to the device's [`QueueServer`] with its ring layout, its notify eventfd
//! (the ioeventfd KVM signals on a guest kick) and a call eventfd:
//!
//! * with MSI-X enabled and a vector assigned to the queue, the vector's irqfd
//!   ([`pci::MsiInterrupt::irqfd`]): the server interrupts the guest without the VMM (a
//!   masked vector's irqfd is detached from KVM and keeps the interrupt pending);
//! * otherwise (INTx, or no vector) a relay eventfd of the transport that the VMM's I/O
//!   thread watches and turns into the ISR bit and the INTx line
//!   ([`crate::QueueProcessor::relay_call`]).
//!
//! On a device reset the transport calls [`crate::VirtioDevice::reset`], where the device
//! takes its queues back (GET_VRING_BASE).

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::queue::QueueLayout;

/// A server refused or failed to take the queues.
#[derive(Debug, thiserror::Error)]
#[error("external queue server: {0}")]
pub struct QueueServerError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// One enabled queue handed to the server.
pub struct ExternalQueue<'a> {
    pub index: usize,
    pub layout: QueueLayout,
    /// Written when the driver kicks the queue.
    pub kick: &'a EventFd,
    /// Written by the server to interrupt the driver for this queue.
    pub call: &'a EventFd,
}

/// What a device served by another process does at DRIVER_OK.
pub trait QueueServer {
    /// Take `queues` (the enabled ones) over `mem` with the driver's `features`.
    fn start(
        &mut self,
        features: u64,
        mem: &GuestMemoryMmap,
        queues: &[ExternalQueue<'_>],
    ) -> Result<(), QueueServerError>;
}
