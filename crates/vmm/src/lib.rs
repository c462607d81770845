//! The virtual machine monitor: assembles a VM from a [`config::VmConfig`] on KVM (memory,
//! in-kernel irqchip and PIT, devices, vCPU threads) and runs it until it ends.

mod boot_files;
pub mod config;
pub mod console;
mod console_socket;
pub mod control;
pub mod diagnostics;
pub mod emulation;
mod event_loop;
mod io_thread;
mod irq_routing;
mod kick;
mod pci_devices;
pub mod snapshot;
pub mod vcpu;
pub mod vm;

pub use config::{DiskConfig, PitMode, SerialMode, VmConfig, VsockConfig};
pub use control::VmHandle;
pub use devices::{ExitReason, VmExit};
pub use vm::{Vm, VmError};
