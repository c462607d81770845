//! Devices of the virtual machine platform: the PIO/MMIO buses and legacy devices.

pub mod bus;

pub use bus::{Bus, BusDevice, BusError};
