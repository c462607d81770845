//! Guests that fail: vessel reports what happened and exits instead of hanging.

mod common;

use common::{multiboot_guest, vessel, TIMEOUT};

#[test]
fn executing_from_unbacked_memory_is_reported_with_rip_and_exits_nonzero() {
    let kernel = multiboot_guest("exec_unbacked", &["exec_unbacked.S"], "multiboot.ld");
    let r = vessel(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "32M",
        ],
        TIMEOUT,
    );
    assert_eq!(
        r.status,
        Some(4),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stderr.contains("KVM_EXIT_INTERNAL_ERROR"),
        "stderr: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("emulation failure"),
        "stderr: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("RIP 0x00000000d0000000"),
        "stderr: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("instruction bytes at 0xd0000000"),
        "stderr: {}",
        r.stderr
    );
}

#[test]
fn triple_fault_ends_the_vm_with_a_note() {
    let kernel = multiboot_guest("triple_fault", &["triple_fault.S"], "multiboot.ld");
    let r = vessel(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "32M",
        ],
        TIMEOUT,
    );
    assert_eq!(r.status, Some(0), "stderr: {}", r.stderr);
    assert!(r.stderr.contains("triple-faulted"), "stderr: {}", r.stderr);
}
