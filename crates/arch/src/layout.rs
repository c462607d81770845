//! Guest physical address layout of a vessel VM (x86-64).
//!
//! ```text
//! 0x0000_0500  GDT            0x0000_0520  IDT (empty)
//! 0x0000_6000  boot info (multiboot info / PVH start_info and their tables)
//! 0x0000_7000  Linux zero page (boot_params)
//! 0x0000_8ff0  initial stack (grows down)
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000..0xf000 page directories (identity map of 4 GiB)
//! 0x0002_0000  kernel command line (up to CMDLINE_MAX_SIZE)
//! 0x0009_fc00  EBDA: MP floating pointer and MP configuration table
//! 0x000e_0000  ACPI: RSDP followed by the other tables
//! 0x0010_0000  high memory: kernel, then initrd / modules
//! 0xc000_0000  32-bit MMIO hole up to 4 GiB (PCI BARs, ECAM, IOAPIC, LAPIC)
//! 0x1_0000_0000  RAM above 4 GiB, when the guest has more than fits below the hole
//! ```

pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x520;
pub const BOOT_INFO_ADDR: u64 = 0x6000;
pub const BOOT_INFO_SIZE: u64 = 0x1000;
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Largest command line vessel accepts (bytes, without the NUL).
pub const CMDLINE_MAX_SIZE: usize = 0x10000 - 1;
/// Start of the extended BIOS data area; RAM below it is usable by the guest.
pub const EBDA_START: u64 = 0x9fc00;
pub const MPTABLE_ADDR: u64 = EBDA_START;
pub const RSDP_ADDR: u64 = 0xe0000;
/// Start of the BIOS area (up to 1 MiB); vessel's ACPI tables live at its bottom.
pub const BIOS_AREA_START: u64 = 0xe0000;
/// End of the BIOS area that ACPI tables may occupy.
pub const ACPI_AREA_END: u64 = 0x100000;
pub const HIMEM_START: u64 = 0x100000;

/// Start of the 32-bit MMIO hole; guest RAM below 4 GiB ends here at most.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const FOUR_GIB: u64 = 0x1_0000_0000;
/// Window for 32-bit PCI BARs.
pub const PCI_MMIO32_START: u64 = MMIO_HOLE_START;
pub const PCI_MMIO32_SIZE: u64 = 0x2000_0000;
/// PCI ECAM (MMCONFIG) window, 1 MiB per bus, bus 0 only.
pub const PCI_ECAM_START: u64 = 0xe000_0000;
pub const PCI_ECAM_SIZE: u64 = 0x10_0000;
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// KVM's private pages (TSS and identity-map) live just below the BIOS ROM area.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

/// Port of the ACPI sleep control register (HW-reduced ACPI), sleep status follows.
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
/// ACPI reset register port and the value that resets.
pub const ACPI_RESET_PORT: u16 = 0x602;
pub const ACPI_RESET_VALUE: u8 = 0x1;
pub const ACPI_PM_PORT_BASE: u16 = 0x600;
pub const ACPI_PM_PORT_LEN: u16 = 0x4;

/// Legacy ISA IRQ of COM1.
pub const COM1_IRQ: u32 = 4;
pub const COM1_PORT: u16 = 0x3f8;
/// Number of IOAPIC pins (KVM's in-kernel IOAPIC has 24).
pub const IOAPIC_PINS: u32 = 24;
