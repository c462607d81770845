//! Boots small guests built by the test suite on KVM: real/protected mode, multiboot with
//! command line and module, and the exit paths.

mod common;

use common::{multiboot_guest, multiboot_guest_default_ld, vessel, TIMEOUT};

#[test]
fn guest_prints_from_protected_and_real_mode_then_powers_off() {
    let kernel = multiboot_guest("modes", &["modes.S"], "multiboot.ld");
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
    assert_eq!(r.status, Some(0), "stderr: {}", r.stderr);
    assert!(
        r.stdout.contains("hello from 32-bit protected mode\n"),
        "stdout: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("hello from 16-bit real mode\n"),
        "stdout: {}",
        r.stdout
    );
}

#[test]
fn multiboot_guest_reads_cmdline_and_module_and_exits_with_code() {
    let kernel = multiboot_guest(
        "multiboot",
        &["multiboot_header.S", "multiboot_guest.c"],
        "multiboot.ld",
    );
    let module = common::out_dir().join("module0.txt");
    let content = b"vessel multiboot module 0\n".repeat(1000);
    std::fs::write(&module, &content).unwrap();
    let r = vessel(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            module.to_str().unwrap(),
            "--memory",
            "128M",
            "--cmdline",
            "hello=world exit=42",
        ],
        TIMEOUT,
    );
    assert_eq!(
        r.status,
        Some((42 << 1) | 1),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    // Like GRUB and QEMU, the kernel's name comes first (argv[0]).
    let expected = format!("cmdline: {} hello=world exit=42\n", kernel.display());
    assert!(r.stdout.contains(&expected), "stdout: {}", r.stdout);
    assert!(
        r.stdout.contains("mem_lower=639 mem_upper=130048\n"),
        "stdout: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("loader: vessel\n"),
        "stdout: {}",
        r.stdout
    );
    let hash = common::fnv1a(&content);
    let expected = format!(
        "len={} fnv1a={hash:#x} name={}\n",
        content.len(),
        module.display()
    );
    assert!(
        r.stdout.contains(&expected),
        "want {expected:?} in stdout: {}",
        r.stdout
    );
    // The memory map matches vessel's e820 layout for 128 MiB.
    for line in [
        "mmap: 0x0 0x9fc00 1\n",
        "mmap: 0x9fc00 0x400 2\n",
        &format!("mmap: 0x100000 {:#x} 1\n", (128u64 << 20) - 0x100000),
    ] {
        assert!(
            r.stdout.contains(line),
            "want {line:?} in stdout: {}",
            r.stdout
        );
    }
}

#[test]
fn multiboot_guest_without_exit_code_powers_off() {
    let kernel = multiboot_guest(
        "multiboot",
        &["multiboot_header.S", "multiboot_guest.c"],
        "multiboot.ld",
    );
    let r = vessel(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "plain",
        ],
        TIMEOUT,
    );
    assert_eq!(r.status, Some(0), "stderr: {}", r.stderr);
    assert!(r.stdout.contains("module: none\n"));
}

#[test]
fn multiboot_elf_with_headers_in_the_bios_area_boots() {
    // `ld -Ttext 0x100000` puts a LOAD segment with only the ELF headers at 0xff000, below
    // 1 MiB; GRUB and QEMU load it, and so must vessel (the guest checks the bytes there).
    let kernel = multiboot_guest_default_ld("low_segment", &["low_segment.S"]);
    let r = vessel(&["run", "--kernel", kernel.to_str().unwrap()], TIMEOUT);
    assert_eq!(r.status, Some(0x21 << 1 | 1), "stderr: {}", r.stderr);
}
