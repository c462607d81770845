//! Guests on hosts whose /dev/kvm is a software nested KVM (kvm_pvm), where KVM stops on
//! ring-0 instructions its emulator lacks and vessel emulates them (docs/nested-kvm.md).
//! On hardware KVM the same guests run natively, so the tests hold on both.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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

/// The stock Debian guest of scripts/make-guest.sh, in $VESSEL_GUEST_DIR or guest/ (the
/// directory the TCG tests share; the script does nothing when it is built already).
fn debian_guest() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("VESSEL_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("guest"));
    let out = Command::new(root.join("scripts/make-guest.sh"))
        .env("OUT", &dir)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/make-guest.sh");
    assert!(
        out.status.success(),
        "scripts/make-guest.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The ELF vmlinux skips the decompressor, which is slow where ring 0 is emulated.
    let kernel = if dir.join("vmlinux").exists() {
        dir.join("vmlinux")
    } else {
        dir.join("bzImage")
    };
    (kernel, dir.join("initramfs.cpio.gz"))
}

/// Command line for the Debian kernel on a nested host (docs/nested-kvm.md): `noxsave` and
/// `clearcpuid=` keep XSAVE, CMPXCHG16B and the SIMD crypto code off the kernel's paths (the
/// first two are emulated by vessel, but each use costs an exit; SIMD arithmetic is not
/// emulated), the rest trims ring-0 work, all of which runs through KVM's emulator there;
/// `cryptomgr.notests` above all: the RSA self-tests alone outlast the kernel's 60 s wait for
/// an algorithm there, and loading the built-in X.509 certificates fails with -ETIMEDOUT.
const NESTED_CMDLINE: &str = "console=ttyS0 noxsave \
    clearcpuid=cx16,ssse3,sse4_1,sse4_2,pclmulqdq,aes,sha_ni panic=-1 mitigations=off \
    tsc=reliable apparmor=0 audit=0 cryptomgr.notests";

/// The initramfs without its gzip layer: the kernel copies it instead of inflating it in
/// ring 0 (about 100 s instead of 340 s of emulated work on kvm_pvm).
fn uncompressed(initrd: &Path) -> PathBuf {
    let out = common::out_dir().join("nested-initramfs.cpio");
    let data = Command::new("gzip")
        .arg("-dc")
        .arg(initrd)
        .output()
        .expect("run gzip");
    assert!(data.status.success(), "gzip -dc {initrd:?} failed");
    std::fs::write(&out, data.stdout).unwrap();
    out
}

#[test]
#[ignore = "boots the stock Debian kernel: about 20 minutes on a nested (kvm_pvm) host, where ring 0 is emulated (docs/nested-kvm.md); run with --ignored"]
fn debian_cloud_kernel_boots_to_the_init_marker() {
    let (kernel, initrd) = debian_guest();
    let initrd = uncompressed(&initrd);
    let r = vessel(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--memory",
            "256M",
            "--cmdline",
            NESTED_CMDLINE,
        ],
        Duration::from_secs(45 * 60),
    );
    r.expect_stdout("VESSEL-GUEST-READY");
    r.expect_status(0);
    eprintln!("time to power-off: {:?}", r.elapsed);
}
