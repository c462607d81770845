//! x86-64 platform set-up for vessel guests: memory layout and e820 map, kernel loading and
//! boot protocols, initial CPU state, CPUID and MSRs, MP and ACPI tables.
//!
//! Everything here is pure layout logic over guest memory (no KVM calls), so it is tested
//! without a hypervisor.

pub mod acpi;
pub mod acpi_pci;
pub mod boot;
pub mod cpu_state;
pub mod cpuid;
pub mod layout;
pub mod memory_map;
pub mod mptable;
pub mod msr;

/// Guest memory as vessel maps it.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;
