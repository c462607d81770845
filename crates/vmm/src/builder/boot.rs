//! What a booting VM's RAM starts with: the kernel and initrd (read before anything else
//! is built, so a bad path fails first), the ACPI tables with the PCI host bridge, the MP
//! table, and the boot protocol's set-up; it decides the vCPU entry and whether the PIT
//! is wanted.

use arch::cpu_state::EntryMode;
use arch::memory_map::RamLayout;
use arch::GuestMemory;

use super::boot_files::{read_boot_file, MAX_INITRD_BYTES, MAX_KERNEL_BYTES};
use crate::config::{BootSource, VmConfig};
use crate::error::VmError;

/// The kernel and initrd of a VM about to boot.
pub(crate) struct BootImages {
    source: BootSource,
    kernel: Vec<u8>,
    initrd: Option<Vec<u8>>,
}

/// Where the boot vCPU starts, and whether the kernel wants the PIT.
pub(crate) struct BootEntry {
    pub entry: EntryMode,
    pub with_pit: bool,
}

impl BootImages {
    /// Reads `cfg`'s kernel and initrd (regular files of bounded size; the initrd must fit
    /// in guest RAM).
    pub fn read(cfg: &VmConfig) -> Result<Self, VmError> {
        let source = cfg.boot.clone().ok_or(VmError::NoBootSource)?;
        let kernel = read_boot_file(&source.kernel, "kernel", MAX_KERNEL_BYTES)?;
        let initrd = match &source.initrd {
            Some(p) => Some(read_boot_file(
                p,
                "initrd",
                MAX_INITRD_BYTES.min(cfg.machine.memory),
            )?),
            None => None,
        };
        Ok(Self {
            source,
            kernel,
            initrd,
        })
    }

    /// Writes the ACPI and MP tables and loads the kernel, initrd and command line into
    /// `mem`.
    pub fn load(
        &self,
        cfg: &VmConfig,
        mem: &GuestMemory,
        layout: &RamLayout,
    ) -> Result<BootEntry, VmError> {
        // The PCI host bridge (`\_SB_.PCI0`) and its ECAM window (MCFG): without them an
        // ACPI guest such as Linux scans no PCI bus and sees none of the virtio devices.
        let acpi = arch::acpi::AcpiConfig {
            cpus: cfg.machine.cpus,
            extra_dsdt: arch::acpi_pci::host_bridge_aml(arch::layout::PCI_ECAM_START),
            extra_tables: vec![arch::acpi_pci::mcfg(arch::layout::PCI_ECAM_START)],
        };
        let acpi = arch::acpi::setup_acpi(mem, &acpi)?;
        arch::mptable::setup_mptable(mem, cfg.machine.cpus)?;
        let initrd_name = self
            .source
            .initrd
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let boot = arch::boot::load(
            mem,
            layout,
            &arch::boot::BootConfig {
                kernel: &self.kernel,
                initrd: self.initrd.as_deref(),
                initrd_name: &initrd_name,
                kernel_name: &self.source.kernel.to_string_lossy(),
                cmdline: &self.source.cmdline,
                rsdp_addr: acpi.rsdp_addr,
                acpi_end: acpi.end,
            },
        )?;
        Ok(BootEntry {
            entry: boot.entry,
            with_pit: cfg.machine.pit.wanted(boot.format),
        })
    }
}
