//! Guests on hosts whose /dev/kvm is a software nested KVM (kvm_pvm), where KVM stops on
//! ring-0 instructions its emulator lacks and vessel emulates them (docs/nested-kvm.md).
//! On hardware KVM the same guests run natively, so the tests hold on both. The tests that
//! boot Debian's kernel are in tests/nested/.

mod common;

use std::path::Path;

use common::nested::nested_cmdline;
use common::{elf64_guest, vessel, TIMEOUT};

/// Build the 64-bit test guest `name` (tests/guests/NAME.c), run it, expect status 0.
fn run_test_guest(name: &str) -> common::Run {
    let source = format!("{name}.c");
    let kernel = elf64_guest(name, &["linux64_start.S", &source], "linux64.ld");
    let r = vessel(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "64M",
        ],
        TIMEOUT,
    );
    r.expect_status(0);
    r
}

#[test]
fn ring0_instructions_the_nested_kvm_lacks_work_in_a_test_guest() {
    let r = run_test_guest("nested_insns");
    for check in [
        "int3 gate and iretq: ok",
        "iretq frame: ok",
        "cmpxchg16b: ok",
        "popcnt: ok",
        "swapgs: ok",
        "nested-insns: done",
    ] {
        r.expect_stdout(check);
    }
    assert!(
        r.stdout.contains("xrstor/xsave: ok") || r.stdout.contains("xsave: not offered"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_user_mode_syscall_enters_the_kernel_at_ring_0() {
    let r = run_test_guest("nested_user");
    r.expect_stdout("user: entering ring 3, popcnt=8");
    // The entry runs at CPL 0 (on kvm_pvm because vessel completes the syscall).
    r.expect_stdout("syscall: cs=0x10\n");
}

/// The emulator's messages are info-level log lines: shown by default (on kvm_pvm, where it
/// runs), hidden by `--log-level warn`, every emulation shown by `--log-level debug`.
#[test]
fn log_level_selects_the_emulators_messages() {
    let kernel = elf64_guest(
        "nested_insns",
        &["linux64_start.S", "nested_insns.c"],
        "linux64.ld",
    );
    let run = |level: &str| {
        let r = vessel(
            &[
                "--log-level",
                level,
                "run",
                "--kernel",
                kernel.to_str().unwrap(),
                "--memory",
                "64M",
            ],
            TIMEOUT,
        );
        r.expect_status(0);
        r
    };
    let warn = run("warn");
    assert!(!warn.stderr.contains("vessel: "), "{}", warn.stderr);
    if Path::new("/sys/module/kvm_pvm").exists() {
        let info = run("info");
        assert!(
            info.stderr
                .contains("vessel: emulated `int3` for the guest (the host's KVM could not)\n"),
            "{}",
            info.stderr
        );
        assert!(!info.stderr.contains("vessel: debug: "), "{}", info.stderr);
        let debug = run("debug");
        assert!(
            debug
                .stderr
                .contains("vessel: debug: x86_emulator: emulated `"),
            "{}",
            debug.stderr
        );
    }
}

/// `--emulator-fixups=off`: KVM's emulation failures stay the guest's fault, reported as
/// KVM reported them; nothing is emulated. On hardware KVM the guest runs natively.
#[test]
fn with_emulator_fixups_off_an_emulation_failure_is_a_fault() {
    let kernel = elf64_guest(
        "nested_insns",
        &["linux64_start.S", "nested_insns.c"],
        "linux64.ld",
    );
    let r = vessel(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "64M",
            "--emulator-fixups=off",
        ],
        TIMEOUT,
    );
    assert!(!r.stderr.contains("vessel: emulated"), "{}", r.stderr);
    if Path::new("/sys/module/kvm_pvm").exists() {
        assert_ne!(r.status, Some(0), "{}", r.stderr);
        assert!(r.stderr.contains("emulation failure"), "{}", r.stderr);
    } else {
        r.expect_status(0);
    }
}

#[test]
fn nested_cmdline_is_one_line_of_options() {
    let cmdline = nested_cmdline();
    assert!(cmdline.starts_with("console=ttyS0 "), "{cmdline}");
    assert!(cmdline.contains(" initcall_blacklist=ftrace_check_for_weak_functions,"));
    assert!(!cmdline.contains('#') && !cmdline.contains('\n'));
    // Linux's x86 COMMAND_LINE_SIZE.
    assert!(cmdline.len() < 2048);
}
