//! ACPI description of the PCI host bridge: the DSDT device `\_SB_.PCI0` (resources and
//! legacy interrupt routing) and the MCFG table that announces the ECAM window.

use acpi_tables::aml;
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use crate::acpi::OEM_ID;
use crate::layout::{PCI_ECAM_SIZE, PCI_MMIO32_SIZE, PCI_MMIO32_START};

/// Devices on bus 0 (slot 0 is the host bridge).
pub const PCI_SLOTS: u8 = 32;
/// First IOAPIC pin used for PCI INTx; slots share pins 16..=23.
const PCI_INTX_FIRST_GSI: u32 = 16;

/// The IOAPIC GSI that INTx pin A of `slot` is routed to (the DSDT's `_PRT` says the same).
pub fn intx_gsi(slot: u8) -> u32 {
    PCI_INTX_FIRST_GSI + u32::from(slot % 8)
}

/// AML for `\_SB_.PCI0`: a PCI Express host bridge with bus 0, the 0xCF8 ports, the rest
/// of the I/O space and the 32-bit MMIO window, and a `_PRT` for pin A of every slot; and
/// `\_SB_.MRES`, motherboard resources reserving the ECAM window (Linux uses MMCONFIG only
/// when it is reserved).
pub fn host_bridge_aml(ecam_base: u64) -> Vec<u8> {
    let bus = aml::AddressSpace::<u16>::new_bus_number(0, 0);
    let cf8 = aml::IO::new(0xcf8, 0xcf8, 1, 8);
    let io_low = aml::AddressSpace::<u16>::new_io(0, 0xcf7, None);
    let io_high = aml::AddressSpace::<u16>::new_io(0xd00, 0xffff, None);
    let mmio32 = aml::AddressSpace::<u32>::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO32_START as u32,
        (PCI_MMIO32_START + PCI_MMIO32_SIZE - 1) as u32,
        None,
    );
    let crs = aml::ResourceTemplate::new(vec![&bus, &cf8, &io_low, &io_high, &mmio32]);

    let addresses: Vec<u32> = (1..PCI_SLOTS)
        .map(|s| (u32::from(s) << 16) | 0xffff)
        .collect();
    let gsis: Vec<u32> = (1..PCI_SLOTS).map(intx_gsi).collect();
    let entries: Vec<aml::Package> = addresses
        .iter()
        .zip(&gsis)
        .map(|(addr, gsi)| aml::Package::new(vec![addr, &0u8, &0u8, gsi]))
        .collect();
    let prt = aml::Package::new(entries.iter().map(|e| e as &dyn Aml).collect());

    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A08"));
    let cid = aml::Name::new("_CID".into(), &aml::EISAName::new("PNP0A03"));
    let adr = aml::Name::new("_ADR".into(), &0u8);
    let seg = aml::Name::new("_SEG".into(), &0u8);
    let uid = aml::Name::new("_UID".into(), &0u8);
    let bbn = aml::Name::new("_BBN".into(), &0u8);
    let crs = aml::Name::new("_CRS".into(), &crs);
    let prt = aml::Name::new("_PRT".into(), &prt);
    let device = aml::Device::new(
        "_SB_.PCI0".into(),
        vec![&hid, &cid, &adr, &seg, &uid, &bbn, &crs, &prt],
    );
    let mut bytes = Vec::new();
    device.to_aml_bytes(&mut bytes);

    let ecam = aml::Memory32Fixed::new(false, ecam_base as u32, PCI_ECAM_SIZE as u32);
    let ecam_crs = aml::ResourceTemplate::new(vec![&ecam]);
    let mres_hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C02"));
    let mres_uid = aml::Name::new("_UID".into(), &1u8);
    let mres_crs = aml::Name::new("_CRS".into(), &ecam_crs);
    aml::Device::new("_SB_.MRES".into(), vec![&mres_hid, &mres_uid, &mres_crs])
        .to_aml_bytes(&mut bytes);
    bytes
}

/// PCI Express memory-mapped configuration table: segment 0, bus 0, ECAM at `ecam_base`.
pub fn mcfg(ecam_base: u64) -> Sdt {
    let mut t = Sdt::new(*b"MCFG", 44, 1, OEM_ID, *b"VESSELVM", 1);
    let mut entry = Vec::with_capacity(16);
    entry.extend_from_slice(&ecam_base.to_le_bytes());
    entry.extend_from_slice(&0u16.to_le_bytes()); // segment group
    entry.push(0); // start bus
    entry.push(((PCI_ECAM_SIZE >> 20) - 1) as u8); // end bus
    entry.extend_from_slice(&0u32.to_le_bytes());
    t.append_slice(&entry);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcfg_names_the_ecam_window_for_bus_0() {
        let t = mcfg(0xe000_0000);
        let b = t.as_slice();
        assert_eq!(&b[..4], b"MCFG");
        assert_eq!(b.len(), 60);
        assert_eq!(
            u64::from_le_bytes(b[44..52].try_into().unwrap()),
            0xe000_0000
        );
        assert_eq!((b[54], b[55]), (0, 0));
        assert_eq!(b.iter().fold(0u8, |s, x| s.wrapping_add(*x)), 0);
    }

    #[test]
    fn host_bridge_has_its_ids_and_routing() {
        let aml = host_bridge_aml(0xe000_0000);
        for name in [&b"PCI0"[..], b"_HID", b"_CRS", b"_PRT", b"_BBN", b"MRES"] {
            assert!(
                aml.windows(4).any(|w| w == name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        assert_eq!(intx_gsi(1), 17);
        assert_eq!(intx_gsi(8), 16);
    }
}
