//! virtio 1.x devices for vessel: the modern PCI transport, split virtqueues and the
//! virtio-blk, virtio-net, virtio-rng, virtio-console, virtio-vsock and virtio-balloon
//! device models. No KVM here.
//!
//! # Wiring a device into the VMM
//!
//! ```text
//! let bar = allocator.allocate(VIRTIO_PCI_BAR_SIZE, BarKind::Memory64 { prefetchable: false })?;
//! let dev = VirtioPciDevice::new(Box::new(Block::new(disk, "serial")), guest_mem.clone(),
//!                                bar, msi_route /* Arc<dyn MsiInterrupt> */,
//!                                Some(intx_line) /* Arc<dyn IntxLine> */)?;
//! let processor = dev.queue_processor();          // Clone + Send + Sync, for the I/O thread
//! for (offset, fd) in dev.ioeventfds() { vm.register_ioevent(fd, Mmio(bar + offset), NoDatamatch) }
//! let dev = Arc::new(Mutex::new(dev));
//! pci_root.lock().add_device(None, dev.clone())?;  // config space (CF8/CFC and ECAM)
//! mmio_bus.insert(dev.clone(), bar, VIRTIO_PCI_BAR_SIZE)?;
//! // I/O thread: epoll on processor.notifier(q) for every q; when readable:
//! processor.handle_notify(q)                      // reads the eventfd, runs the queue
//! ```
//!
//! * vCPU threads only touch registers: a notify write (if no ioeventfd caught it) is an
//!   eventfd write; requests run in [`QueueProcessor::process_queue`].
//! * Interrupts: MSI-X vector `0` is the configuration vector as Linux assigns it, one per
//!   queue after it (the driver chooses); they reach [`pci::MsiInterrupt::trigger`]. With
//!   MSI-X disabled the ISR register is set and [`pci::IntxLine::set_level`] raised until
//!   the guest reads ISR.
//! * Console input: `ConsoleHandle::push_input` then `process_queue(console::RX_QUEUE)`;
//!   console resize: `ConsoleHandle::set_size` then `signal_config_change()`.

pub mod balloon;
pub mod blk;
mod chain_io;
pub mod console;
mod device;
mod drain;
pub mod external;
mod interrupt;
pub mod net;
mod persist;
mod processor;
pub mod queue;
pub mod rate_limiter;
pub mod rng;
mod transport;
pub mod vsock;

pub use chain_io::{ChainIoError, ChainReader, ChainWriter};
pub use device::{run_queue, QueueRun, VirtioDevice, DEVICE_FEATURES_TRANSPORT};
pub use interrupt::{InterruptState, VirtioInterrupt};
pub use persist::{DeviceState, Persist, PersistError};
pub use processor::{ProcessError, QueueProcessor};
pub use queue::{ChainError, Queue, QueueError, QueueLayout, Segment};
pub use transport::{
    bar_layout, QueueState, StateError, TransportArgs, TransportError, VirtioPciDevice,
    VirtioPciState, NO_VECTOR, TRANSPORT_STATE_VERSION, VIRTIO_PCI_BAR, VIRTIO_PCI_BAR_SIZE,
};

/// Device status bits (virtio 1.2 §2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    pub const FAILED: u8 = 0x80;
}

/// Transport feature bits.
pub mod features {
    use virtio_bindings::{virtio_config, virtio_ring};
    pub const RING_INDIRECT_DESC: u64 = 1 << virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
    pub const RING_EVENT_IDX: u64 = 1 << virtio_ring::VIRTIO_RING_F_EVENT_IDX;
    pub const VERSION_1: u64 = 1 << virtio_config::VIRTIO_F_VERSION_1;
}
