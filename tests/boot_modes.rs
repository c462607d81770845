//! Boots small guests built by the test suite on KVM: real/protected mode, multiboot with
//! command line and module, and the exit paths.

mod common;

use common::{multiboot_guest, vessel, TIMEOUT};

#[test]
fn guest_prints_from_protected_and_real_mode_then_powers_off() {
    let kernel = multiboot_guest("modes", &["modes.S"], "multiboot.ld");
    let r = vessel(&["run", "--kernel", kernel.to_str().unwrap(), "--memory", "64M"], TIMEOUT);
    assert_eq!(r.status, Some(0), "stderr: {}", r.stderr);
    assert!(r.stdout.contains("hello from 32-bit protected mode\n"), "stdout: {}", r.stdout);
    assert!(r.stdout.contains("hello from 16-bit real mode\n"), "stdout: {}", r.stdout);
}
