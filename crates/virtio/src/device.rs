//! What a virtio device model provides to the transport.

use vm_memory::GuestMemoryMmap;

use crate::features::{RING_EVENT_IDX, RING_INDIRECT_DESC, VERSION_1};
use crate::queue::{Queue, QueueError};

/// Feature bits every device gets from the transport.
pub const DEVICE_FEATURES_TRANSPORT: u64 = VERSION_1 | RING_EVENT_IDX | RING_INDIRECT_DESC;

/// A virtio device model: plain state over guest memory, no KVM.
pub trait VirtioDevice: Send {
    /// Virtio device ID (2 = block, 3 = console, 4 = entropy).
    fn device_type(&self) -> u16;
    /// PCI class and subclass to advertise.
    fn pci_class(&self) -> (u8, u8);
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Device-specific feature bits (the transport adds [`DEVICE_FEATURES_TRANSPORT`]).
    fn features(&self) -> u64;
    /// Length of the device-specific configuration structure.
    fn config_len(&self) -> usize;
    /// Guest read of the device configuration; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Guest write of the device configuration (ignored by default).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK having negotiated `features`.
    fn activate(&mut self, _features: u64) {}
    /// The device-specific state a VM snapshot saves (the transport saves the rest);
    /// a device with such state implements [`crate::Persist`] and returns its state here.
    fn save_state(&self) -> crate::DeviceState {
        crate::DeviceState::Stateless
    }
    /// A device whose queues another process serves returns its server: the transport
    /// then hands the queues over at DRIVER_OK instead of running them
    /// ([`crate::external`]), and never calls [`VirtioDevice::process_queue`].
    fn queue_server(&mut self) -> Option<&mut dyn crate::external::QueueServer> {
        None
    }
    /// The driver reset the device: drop all per-driver state.
    fn reset(&mut self) {}
    /// Make completed work durable (a disk flushes): the driver is gone without a word,
    /// e.g. a vhost-user frontend disconnected.
    fn sync(&mut self) {}
    /// The model as `Any`, for the VMM to change a running device of a known type (a
    /// disk swapped for another); `None` for devices nothing changes at run time.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
    /// Whether the device changed its configuration space on its own while it processed
    /// a queue (a balloon's new target); the transport then sends the driver a
    /// configuration-change interrupt. Reading clears it.
    fn take_config_change(&mut self) -> bool {
        false
    }
    /// Handle the available requests of queue `index`. Returns whether requests are left
    /// (the device stopped after a bounded amount of work and wants to be called again).
    /// An error means the queue is broken: the transport sets DEVICE_NEEDS_RESET.
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError>;
}

/// What one run of a queue leaves its transport to do.
#[derive(Debug)]
pub struct QueueRun {
    /// The driver asked to be interrupted for the used entries added (send it even when
    /// the queue broke: what was completed before is the driver's).
    pub interrupt: bool,
    /// Whether requests are left (run the queue again), or why the queue is broken.
    pub more: Result<bool, QueueError>,
}

/// Runs queue `index` of `device` once and asks the ring whether the driver wants an
/// interrupt: the queue-running step of both transports (virtio-pci in this crate's
/// `QueueProcessor`, and vhost-user's backend). They signal and re-kick their own ways.
pub fn run_queue(
    device: &mut dyn VirtioDevice,
    index: usize,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
) -> QueueRun {
    let outcome = device.process_queue(index, queue, mem);
    let notify = queue.needs_notification(mem);
    QueueRun {
        interrupt: matches!(notify, Ok(true)),
        more: outcome.and_then(|more| notify.map(|_| more)),
    }
}
