//! The ACPI tables vessel builds, checked by the reference: ACPICA's `iasl` disassembles
//! each table (checksums, AML syntax) and the result names what vessel meant to describe.

use std::path::Path;
use std::process::Command;

use arch::acpi::{dsdt, fadt, madt};
use arch::acpi_pci::{host_bridge_aml, mcfg};
use arch::layout::PCI_ECAM_START;

fn disassemble(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let file = dir.join(format!("{name}.dat"));
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new("iasl")
        .arg("-d")
        .arg(&file)
        .current_dir(dir)
        .output()
        .expect("iasl (apt acpica-tools) runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iasl -d {name}: {log}");
    assert!(
        !log.contains("Error") && !log.contains("Invalid"),
        "iasl -d {name}: {log}"
    );
    std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap()
}

#[test]
fn iasl_accepts_every_table() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("acpi-iasl");
    std::fs::create_dir_all(&dir).unwrap();
    let dsdt = disassemble(
        &dir,
        "dsdt",
        dsdt(&host_bridge_aml(PCI_ECAM_START)).as_slice(),
    );
    for want in [
        "PNP0A08",
        "PNP0501",
        "ACPI0013",
        "PNP0C0C",
        "PNP0C02",
        "_S5_",
        "_PRT",
        "Notify (\\_SB.PWRB, 0x80)",
    ] {
        assert!(dsdt.contains(want), "DSDT lacks {want}:\n{dsdt}");
    }
    let fadt = disassemble(&dir, "facp", fadt(0x1234).as_slice());
    assert!(fadt.contains("Hardware Reduced (V5) : 1"), "{fadt}");
    assert!(fadt.contains("Sleep Control Register"), "{fadt}");
    let madt = disassemble(&dir, "apic", madt(4).unwrap().as_slice());
    assert_eq!(madt.matches("Processor Local APIC").count(), 4, "{madt}");
    let mcfg = disassemble(&dir, "mcfg", mcfg(PCI_ECAM_START).as_slice());
    assert!(mcfg.contains("00000000E0000000"), "{mcfg}");
}
