//! SMP on KVM: the guest finds the vCPUs in the MADT and MP table and starts each AP with
//! INIT/SIPI; every AP reports its APIC id.

mod common;

use common::{multiboot_guest, vessel, TIMEOUT};

fn boot_smp(cpus: u8) {
    let kernel = multiboot_guest(
        "smp",
        &["multiboot_header.S", "smp_trampoline.S", "smp_guest.c"],
        "multiboot.ld",
    );
    let r = vessel(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--cpus",
            &cpus.to_string(),
            "--memory",
            "64M",
        ],
        TIMEOUT,
    );
    r.expect_status(0);
    let header = format!("SMP: MADT cpus={cpus} mptable cpus={cpus} BSP apic 0\n");
    r.expect_stdout(&header);
    for id in 1..cpus {
        assert!(
            r.stdout.contains(&format!("AP apic {id} online\n")),
            "AP {id} missing: {}",
            r.stdout
        );
    }
    r.expect_stdout(&format!("all {cpus} cpus online\n"));
}

#[test]
fn two_vcpus_start_and_report_their_apic_ids() {
    boot_smp(2);
}

#[test]
fn four_vcpus_start_and_report_their_apic_ids() {
    boot_smp(4);
}

#[test]
fn one_vcpu_has_no_aps() {
    boot_smp(1);
}
