//! Devices of the virtual machine platform: the PIO/MMIO buses and the legacy devices
//! (8250 UART, i8042, CMOS RTC, ACPI power management, isa-debug-exit).

pub mod acpi_pm;
pub mod bus;
pub mod cmos;
pub mod debug_exit;
pub mod i8042;
pub mod persist;
pub mod port61;
pub mod serial;
pub mod vm_exit;

pub use bus::{Bus, BusDevice, BusError};
pub use persist::{Persist, PersistError};
pub use vm_exit::{ExitReason, VmExit};
