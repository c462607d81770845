//! The virtual machine monitor: assembles a VM from a [`config::VmConfig`] on KVM (memory,
//! in-kernel irqchip and PIT, devices, vCPU threads) and runs it until it ends.

mod balloon_control;
pub mod builder;
pub mod config;
mod confinement;
pub mod console;
pub mod console_log;
mod console_socket;
pub mod control;
pub mod device_control;
pub mod device_manager;
pub mod diagnostics;
pub mod emulator_fixups;
pub mod error;
mod event_loop;
mod io_thread;
mod irq_routing;
mod kick;
mod kvm_vcpu;
mod memory_slots;
pub mod migration;
mod page_map;
pub mod shared_memory;
pub mod shares;
pub mod snapshot;
pub mod vcpu;
pub mod vm;

pub use balloon_control::BalloonControl;
pub use config::{
    BootSource, ConfigError, DiskConfig, HostResources, MachineConfig, MmdsConfig, PitMode,
    SerialMode, VmConfig, VsockConfig,
};
pub use control::VmHandle;
pub use devices::{ExitReason, VmExit};
pub use emulator_fixups::EmulatorFixups;
pub use virtio::balloon::{BalloonConfig, BalloonReport, DynamicMemory, MAX_BUFFER_PERCENT};
pub use vm::{Vm, VmError};
