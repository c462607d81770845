//! virtio 1.x devices for vessel: the modern PCI transport, split virtqueues and the
//! virtio-blk, virtio-rng and virtio-console device models. No KVM here: the VMM puts the
//! transport on its buses and PCI root, registers the per-queue notify eventfds as
//! ioeventfds and calls [`QueueProcessor::process_queue`] from an I/O thread.

pub mod blk;
mod chain_io;
pub mod console;
mod device;
mod drain;
mod interrupt;
mod processor;
pub mod queue;
pub mod rng;
mod transport;

pub use chain_io::{ChainIoError, ChainReader, ChainWriter};
pub use device::{VirtioDevice, DEVICE_FEATURES_TRANSPORT};
pub use interrupt::VirtioInterrupt;
pub use processor::{ProcessError, QueueProcessor};
pub use queue::{ChainError, Queue, QueueError, QueueLayout, Segment};
pub use transport::{
    bar_layout, TransportError, VirtioPciDevice, NO_VECTOR, VIRTIO_PCI_BAR, VIRTIO_PCI_BAR_SIZE,
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
