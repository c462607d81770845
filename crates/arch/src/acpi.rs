//! ACPI tables: RSDP → XSDT → FADT (→ DSDT), MADT, plus tables other subsystems add
//! (MCFG for PCI). vessel's platform is HW-reduced ACPI, as Firecracker's and Cloud
//! Hypervisor's are: power-off and reset go through the FADT's sleep control and reset
//! registers (port I/O, see `layout`), not through PM1 blocks.

use acpi_tables::aml;
use acpi_tables::sdt::{GenericAddress, Sdt};
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress};

use crate::layout::{
    ACPI_AREA_END, ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_SLEEP_CONTROL_PORT,
    ACPI_SLEEP_STATUS_PORT, COM1_IRQ, COM1_PORT, IOAPIC_ADDR, LAPIC_ADDR, RSDP_ADDR,
};
use crate::GuestMemory;

pub const OEM_ID: [u8; 6] = *b"VESSEL";
const OEM_TABLE_ID: [u8; 8] = *b"VESSELVM";
const OEM_REVISION: u32 = 1;

/// Sleep type value of S5 (soft off) in the `_S5_` package and the sleep control register.
pub const SLP_TYP_S5: u8 = 5;
/// GSI of the Generic Event Device's interrupt (a free ISA IRQ: edge, active high); its
/// event method notifies the power button.
pub const GED_GSI: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("ACPI tables ({0} bytes) do not fit the BIOS area below 1 MiB")]
    TooLarge(u64),
    #[error("{0} vCPUs do not fit the MADT (at most 254)")]
    TooManyCpus(u8),
    #[error("cannot write ACPI tables to guest memory: {0}")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// What the tables describe.
pub struct AcpiConfig {
    pub cpus: u8,
    /// AML appended to the DSDT's `\_SB_` scope contents (devices added by other crates).
    pub extra_dsdt: Vec<u8>,
    /// Further tables referenced from the XSDT (e.g. MCFG).
    pub extra_tables: Vec<Sdt>,
}

fn header(signature: &[u8; 4], length: u32, revision: u8) -> Sdt {
    Sdt::new(
        *signature,
        length,
        revision,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    )
}

/// Differentiated System Description Table: the S5 sleep package and COM1.
pub fn dsdt(extra: &[u8]) -> Sdt {
    let mut t = header(b"DSDT", 36, 6);
    let mut body = Vec::new();
    aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&SLP_TYP_S5, &0u8, &0u8, &0u8]),
    )
    .to_aml_bytes(&mut body);
    let com1_io = aml::IO::new(COM1_PORT, COM1_PORT, 1, 8);
    let com1_irq = aml::Interrupt::new(true, true, false, false, COM1_IRQ);
    let com1_crs = aml::ResourceTemplate::new(vec![&com1_io, &com1_irq]);
    let com1_hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
    let com1_uid = aml::Name::new("_UID".into(), &1u8);
    let com1_crs = aml::Name::new("_CRS".into(), &com1_crs);
    let com1 = aml::Device::new("_SB_.COM1".into(), vec![&com1_hid, &com1_uid, &com1_crs]);
    com1.to_aml_bytes(&mut body);
    power_button_aml(&mut body);
    body.extend_from_slice(extra);
    t.append_slice(&body);
    t
}

/// The ACPI power button of a HW-reduced platform: `\_SB_.PWRB` (PNP0C0C) and a Generic
/// Event Device (ACPI0013) whose interrupt runs `_EVT`, which sends the button's 0x80
/// notification. Pressing the button = raising [`GED_GSI`].
fn power_button_aml(body: &mut Vec<u8>) {
    let pwrb_hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C0C"));
    let pwrb_uid = aml::Name::new("_UID".into(), &0u8);
    aml::Device::new("_SB_.PWRB".into(), vec![&pwrb_hid, &pwrb_uid]).to_aml_bytes(body);

    let irq = aml::Interrupt::new(true, true, false, false, GED_GSI);
    let crs = aml::ResourceTemplate::new(vec![&irq]);
    let pwrb: aml::Path = "\\_SB_.PWRB".into();
    let notify = aml::Notify::new(&pwrb, &0x80u8);
    let is_ours = aml::Equal::new(&aml::Arg(0), &GED_GSI);
    let when = aml::If::new(&is_ours, vec![&notify]);
    let evt = aml::Method::new("_EVT".into(), 1, true, vec![&when]);
    let hid = aml::Name::new("_HID".into(), &"ACPI0013");
    let uid = aml::Name::new("_UID".into(), &0u8);
    let crs = aml::Name::new("_CRS".into(), &crs);
    aml::Device::new("_SB_.GED0".into(), vec![&hid, &uid, &crs, &evt]).to_aml_bytes(body);
}

/// Fixed ACPI Description Table (revision 6.5), HW-reduced.
pub fn fadt(dsdt_addr: u64) -> Sdt {
    const FLAG_RESET_REG_SUP: u32 = 1 << 10;
    const FLAG_HW_REDUCED_ACPI: u32 = 1 << 20;
    const BOOT_ARCH_LEGACY_DEVICES: u16 = 1 << 0;
    const BOOT_ARCH_8042: u16 = 1 << 1;
    const BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
    let mut t = header(b"FACP", 276, 6);
    t.write(
        109,
        BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_8042 | BOOT_ARCH_VGA_NOT_PRESENT,
    );
    t.write(112, FLAG_RESET_REG_SUP | FLAG_HW_REDUCED_ACPI);
    t.write(116, GenericAddress::io_port_address::<u8>(ACPI_RESET_PORT));
    t.write(128, ACPI_RESET_VALUE);
    t.write(131, 5u8); // FADT minor version
    t.write(140, dsdt_addr); // X_DSDT
    t.write(
        244,
        GenericAddress::io_port_address::<u8>(ACPI_SLEEP_CONTROL_PORT),
    );
    t.write(
        256,
        GenericAddress::io_port_address::<u8>(ACPI_SLEEP_STATUS_PORT),
    );
    t.write(268, *b"VESSELVM"); // hypervisor vendor identity
    t
}

/// Multiple APIC Description Table: one local APIC per vCPU (APIC id = vCPU index), the
/// IOAPIC (id after the CPUs) and LINT1 as NMI.
pub fn madt(cpus: u8) -> Result<Sdt, AcpiError> {
    if cpus == 0 || cpus > 254 {
        return Err(AcpiError::TooManyCpus(cpus));
    }
    const PCAT_COMPAT: u32 = 1;
    let mut t = header(b"APIC", 44, 5);
    t.write(36, LAPIC_ADDR as u32);
    t.write(40, PCAT_COMPAT);
    let mut body = Vec::new();
    for id in 0..cpus {
        body.extend_from_slice(&[0, 8, id, id]);
        body.extend_from_slice(&1u32.to_le_bytes()); // enabled
    }
    body.extend_from_slice(&[1, 12, cpus, 0]);
    body.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    body.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]); // all processors: LINT1 is NMI
    t.append_slice(&body);
    Ok(t)
}

fn xsdt(table_addrs: &[u64]) -> Sdt {
    let mut t = header(b"XSDT", 36, 1);
    for a in table_addrs {
        t.append_slice(&a.to_le_bytes());
    }
    t
}

fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(36);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0); // checksum of the first 20 bytes
    r.extend_from_slice(&OEM_ID);
    r.push(2); // revision: ACPI 2.0+ (XSDT)
    r.extend_from_slice(&0u32.to_le_bytes()); // no RSDT
    r.extend_from_slice(&36u32.to_le_bytes());
    r.extend_from_slice(&xsdt_addr.to_le_bytes());
    r.push(0); // extended checksum
    r.extend_from_slice(&[0; 3]);
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |s, b| s.wrapping_add(*b))
        .wrapping_neg()
}

/// Where the tables went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiPlacement {
    /// The RSDP's address (for PVH's start_info and the zero page's `acpi_rsdp_addr`).
    pub rsdp_addr: u64,
    /// First byte after the last table: `[rsdp_addr, end)` must stay untouched by loaders.
    pub end: u64,
}

/// Write all tables to guest memory.
pub fn setup_acpi(mem: &GuestMemory, cfg: &AcpiConfig) -> Result<AcpiPlacement, AcpiError> {
    let mut next = RSDP_ADDR + 64;
    let mut place = |bytes: &[u8]| -> Result<u64, AcpiError> {
        let addr = next;
        let end = addr + bytes.len() as u64;
        if end > ACPI_AREA_END {
            return Err(AcpiError::TooLarge(end - RSDP_ADDR));
        }
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(AcpiError::Write)?;
        next = (end + 7) & !7;
        Ok(addr)
    };
    let dsdt_addr = place(dsdt(&cfg.extra_dsdt).as_slice())?;
    let mut tables = vec![
        place(fadt(dsdt_addr).as_slice())?,
        place(madt(cfg.cpus)?.as_slice())?,
    ];
    for t in &cfg.extra_tables {
        tables.push(place(t.as_slice())?);
    }
    let xsdt_addr = place(xsdt(&tables).as_slice())?;
    mem.write_slice(&rsdp(xsdt_addr), GuestAddress(RSDP_ADDR))
        .map_err(AcpiError::Write)?;
    Ok(AcpiPlacement {
        rsdp_addr: RSDP_ADDR,
        end: next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums_to_zero(b: &[u8]) -> bool {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x)) == 0
    }

    #[test]
    fn tables_are_checksummed_and_linked() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
        let cfg = AcpiConfig {
            cpus: 2,
            extra_dsdt: vec![],
            extra_tables: vec![],
        };
        let placed = setup_acpi(&mem, &cfg).unwrap();
        assert!(placed.end > placed.rsdp_addr + 36 && placed.end <= ACPI_AREA_END);
        let rsdp_addr = placed.rsdp_addr;
        let mut r = [0u8; 36];
        mem.read_slice(&mut r, GuestAddress(rsdp_addr)).unwrap();
        assert_eq!(&r[..8], b"RSD PTR ");
        assert!(sums_to_zero(&r[..20]) && sums_to_zero(&r));
        let xsdt_addr = u64::from_le_bytes(r[24..32].try_into().unwrap());
        let read_table = |addr: u64| {
            let mut h = [0u8; 8];
            mem.read_slice(&mut h, GuestAddress(addr)).unwrap();
            let len = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
            let mut t = vec![0u8; len];
            mem.read_slice(&mut t, GuestAddress(addr)).unwrap();
            assert!(
                sums_to_zero(&t),
                "{:?} checksum",
                std::str::from_utf8(&t[..4])
            );
            t
        };
        let x = read_table(xsdt_addr);
        let sigs: Vec<_> = x[36..]
            .chunks(8)
            .map(|c| read_table(u64::from_le_bytes(c.try_into().unwrap()))[..4].to_vec())
            .collect();
        assert_eq!(sigs, vec![b"FACP".to_vec(), b"APIC".to_vec()]);
        let fadt_addr = u64::from_le_bytes(x[36..44].try_into().unwrap());
        let f = read_table(fadt_addr);
        let dsdt_addr = u64::from_le_bytes(f[140..148].try_into().unwrap());
        assert_eq!(&read_table(dsdt_addr)[..4], b"DSDT");
        assert_eq!(
            u32::from_le_bytes(f[112..116].try_into().unwrap()) & (1 << 20),
            1 << 20
        );
    }

    #[test]
    fn madt_lists_each_cpu_and_the_ioapic() {
        let t = madt(3).unwrap();
        let b = t.as_slice();
        assert_eq!(b.len(), 44 + 3 * 8 + 12 + 6);
        assert_eq!(&b[44..52], &[0, 8, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&b[60..64], &[0, 8, 2, 2]);
        assert_eq!(&b[68..72], &[1, 12, 3, 0]);
        assert!(madt(0).is_err());
    }

    #[test]
    fn dsdt_declares_s5() {
        let d = dsdt(&[]);
        let b = d.as_slice();
        assert!(b.windows(4).any(|w| w == b"_S5_"));
        assert!(b.windows(4).any(|w| w == b"COM1"));
        assert!(b.windows(4).any(|w| w == b"GED0") && b.windows(4).any(|w| w == b"_EVT"));
        assert!(b.windows(8).any(|w| w == b"ACPI0013"));
    }
}
