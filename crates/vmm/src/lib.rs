//! The virtual machine monitor: assembles a VM from a [`config::VmConfig`] on KVM (memory,
//! in-kernel irqchip and PIT, devices, vCPU threads) and runs it until it ends.

pub mod config;
mod console;
pub mod control;
mod io_thread;
mod irq_routing;
mod pci_devices;
pub mod diagnostics;
mod kick;
pub mod vcpu;
pub mod vm;

pub use config::{DiskConfig, SerialMode, VmConfig};
pub use devices::{ExitReason, VmExit};
pub use control::VmHandle;
pub use vm::{Vm, VmError};
