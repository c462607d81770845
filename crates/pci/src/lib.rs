//! PCI for vessel: type-0 configuration space, the bus-0 root complex reached through
//! port 0xCF8/0xCFC and an ECAM window, BAR allocation and relocation, MSI-X and INTx.
//!
//! Everything here is plain state driven by guest register accesses; the VMM supplies the
//! host side through small traits: [`MsiInterrupt`] (KVM irqfd + GSI routing),
//! [`IntxLine`] (a level-triggered IOAPIC pin) and [`BarMoveHandler`] (remapping a BAR's
//! MMIO range when the guest reprograms it).

mod allocator;
mod config;
mod config_access;
mod host_bridge;
mod interrupt;
mod msix;
mod root;

pub use allocator::{AllocatorError, BarAllocator};
pub use config::{
    BarKind, BarMove, ConfigError, PciConfigState, PciConfiguration, PciHeader, NUM_BARS,
};
pub use config_access::{PciConfigIo, PciConfigMmio, PCI_CONFIG_IO_BASE, PCI_CONFIG_IO_LEN};
pub use host_bridge::HostBridge;
pub use interrupt::{IntxLine, MsiInterrupt, MsiMessage};
pub use msix::{MsixState, MsixTable, MSIX_ENTRY_SIZE, MSIX_MAX_VECTORS};
pub use root::{BarMoveHandler, PciDevice, PciRoot, RootError, ECAM_BUS_SIZE};

/// Command register bits.
pub const COMMAND_IO_SPACE: u16 = 1 << 0;
pub const COMMAND_MEMORY_SPACE: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;

/// Capability IDs.
pub const CAP_ID_VENDOR: u8 = 0x09;
pub const CAP_ID_MSIX: u8 = 0x11;
