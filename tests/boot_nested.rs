//! Guests on hosts whose /dev/kvm is a software nested KVM (kvm_pvm), where KVM stops on
//! ring-0 instructions its emulator lacks and vessel emulates them (docs/nested-kvm.md).
//! On hardware KVM the same guests run natively, so the tests hold on both.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::nested::{debian_guest, nested_cmdline};
use common::tcg::{guest_result, sha256_file};
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

/// Boot the Debian guest with the nested-host profile, `extra` arguments to `vessel run`
/// and `extra_cmdline` appended to the command line.
fn boot_debian(extra: &[&str], extra_cmdline: &str) -> common::Run {
    let (kernel, initrd) = debian_guest();
    let cmdline = format!("{} {extra_cmdline}", nested_cmdline());
    let mut args = vec![
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--memory",
        "256M",
        "--cpus",
        "1",
        "--cmdline",
        cmdline.trim_end(),
    ];
    args.extend_from_slice(extra);
    vessel(&args, Duration::from_secs(30 * 60))
}

/// Linux's own virtio-pci, virtio-blk and virtio-rng drivers drive vessel's devices on this
/// host's KVM: the guest copies the disk's first MiB (random data from the host) to 1-2 MiB
/// with direct I/O and a flush, reads 2 MiB back and hashes it; virtio_rng registers with
/// the hwrng core.
#[test]
fn debian_kernel_drives_vessels_virtio_blk_and_rng() {
    const MIB: usize = 1 << 20;
    let disk = common::out_dir().join("nested-devices.raw");
    let mut data = vec![0u8; 16 * MIB];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut data[..MIB],
    )
    .unwrap();
    std::fs::write(&disk, &data).unwrap();
    let disk_arg = format!("path={}", disk.display());
    let r = boot_debian(
        &["--disk", &disk_arg, "--rng"],
        "vessel.test=nested-devices",
    );
    r.expect_stdout("VESSEL-TEST-PASS nested-devices");
    r.expect_status(0);
    assert_eq!(guest_result(&r.stdout, "size_sectors"), "32768");
    let after = std::fs::read(&disk).unwrap();
    assert!(
        after[..MIB] == data[..MIB],
        "the guest changed the first MiB"
    );
    assert!(
        after[MIB..2 * MIB] == data[..MIB],
        "the guest's copy is not on the disk"
    );
    assert!(
        after[2 * MIB..] == data[2 * MIB..],
        "the guest wrote beyond 2 MiB"
    );
    let head = common::out_dir().join("nested-devices.head");
    std::fs::write(&head, &after[..2 * MIB]).unwrap();
    assert_eq!(guest_result(&r.stdout, "sha256_2m"), sha256_file(&head));
    let hwrng = guest_result(&r.stdout, "hwrng");
    assert!(hwrng.starts_with("virtio_rng"), "{hwrng}");
    eprintln!("time to power-off: {:?}", r.elapsed);
}

/// The stock Debian cloud kernel boots to its /init marker and powers off (issue 7). On
/// kvm_pvm this takes minutes: guest ring 0 runs through KVM's emulator and vessel emulates
/// what that lacks (docs/nested-kvm.md); on hardware KVM ring 0 runs natively.
#[test]
fn debian_cloud_kernel_boots_to_the_init_marker() {
    let r = boot_debian(&[], "");
    r.expect_stdout("VESSEL-GUEST-READY");
    r.expect_stdout("kernel=6.1");
    r.expect_status(0);
    eprintln!("time to power-off: {:?}", r.elapsed);
}

/// `tests/guests/vsock/vsockt.c`, built static, in a newc cpio at /bin/vsockt appended to
/// the nested initramfs (the kernel unpacks concatenated archives).
fn initramfs_with_vsockt(initrd: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = common::out_dir().join("vsockt-root");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let out = Command::new("gcc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(dir.join("bin/vsockt"))
        .arg(root.join("tests/guests/vsock/vsockt.c"))
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc -static vsockt.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cpio = Command::new("sh")
        .arg("-c")
        .arg("find . | sort | cpio -o -H newc --quiet")
        .current_dir(&dir)
        .output()
        .expect("run cpio");
    assert!(cpio.status.success(), "cpio failed");
    let mut image = std::fs::read(initrd).unwrap();
    image.extend_from_slice(&cpio.stdout);
    let path = common::out_dir().join("initramfs-nested-vsock.cpio");
    std::fs::write(&path, image).unwrap();
    path
}

/// The host's half of nested-vsock.sh: answer the guest's connection to port 5000 at
/// `UDS_PATH_5000`, then reach the guest's listener on port 6000 through `CONNECT`.
/// Returns (line from the guest client, OK line, line from the guest listener).
fn vsock_host_side(
    uds: PathBuf,
    listener: std::os::unix::net::UnixListener,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(String, String, String), String> {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let (guest, _) = loop {
        match listener.accept() {
            Ok(c) => break c,
            Err(_) if stop.load(Ordering::SeqCst) => return Err("no guest connection".into()),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let timeout = Some(Duration::from_secs(600));
    guest.set_nonblocking(false).map_err(|e| e.to_string())?;
    guest.set_read_timeout(timeout).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(&guest);
    let mut from_client = String::new();
    reader
        .read_line(&mut from_client)
        .map_err(|e| e.to_string())?;
    (&guest)
        .write_all(b"hello from host\n")
        .map_err(|e| e.to_string())?;
    let host = std::os::unix::net::UnixStream::connect(&uds).map_err(|e| e.to_string())?;
    host.set_read_timeout(timeout).map_err(|e| e.to_string())?;
    (&host)
        .write_all(b"CONNECT 6000\n")
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(&host);
    let mut ok = String::new();
    reader.read_line(&mut ok).map_err(|e| e.to_string())?;
    (&host)
        .write_all(b"ping from host\n")
        .map_err(|e| e.to_string())?;
    let mut from_server = String::new();
    reader
        .read_line(&mut from_server)
        .map_err(|e| e.to_string())?;
    Ok((
        from_client.trim_end().to_string(),
        ok.trim_end().to_string(),
        from_server.trim_end().to_string(),
    ))
}

/// Linux's vsock and virtio-vsock drivers drive vessel's virtio-vsock with Firecracker's host
/// side: a guest AF_VSOCK client reaches a host Unix listener at `UDS_PATH_5000`, and a host
/// client of `UDS_PATH` sending `CONNECT 6000` reaches a guest AF_VSOCK listener.
#[test]
fn debian_kernel_talks_to_the_host_over_vessels_vsock() {
    let uds = common::out_dir().join("nested-vsock.sock");
    let port_path = PathBuf::from(format!("{}_5000", uds.display()));
    let _ = std::fs::remove_file(&uds);
    let _ = std::fs::remove_file(&port_path);
    let listener = std::os::unix::net::UnixListener::bind(&port_path).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let host = {
        let (uds, stop) = (uds.clone(), stop.clone());
        std::thread::spawn(move || vsock_host_side(uds, listener, stop))
    };
    let (kernel, initrd) = debian_guest();
    let initrd = initramfs_with_vsockt(&initrd);
    let cmdline = format!("{} vessel.test=nested-vsock", nested_cmdline());
    let vsock = format!("cid=42,uds={}", uds.display());
    let r = vessel(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--memory",
            "256M",
            "--cpus",
            "1",
            "--cmdline",
            &cmdline,
            "--vsock",
            &vsock,
        ],
        Duration::from_secs(30 * 60),
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let host = host.join().unwrap();
    r.expect_stdout("VESSEL-TEST-PASS nested-vsock");
    r.expect_status(0);
    assert_eq!(guest_result(&r.stdout, "vsock_cid"), "42");
    assert_eq!(guest_result(&r.stdout, "vsock_client"), "hello from host");
    assert_eq!(guest_result(&r.stdout, "vsock_server"), "ping from host");
    let (from_client, ok, from_server) = host.unwrap();
    assert_eq!(from_client, "hello from guest");
    assert!(
        ok.starts_with("OK ") && ok[3..].parse::<u32>().is_ok_and(|p| p >= 1 << 30),
        "{ok}"
    );
    assert_eq!(from_server, "pong from guest");
    assert!(!uds.exists(), "vessel removes its socket when it exits");
    eprintln!("time to power-off: {:?}", r.elapsed);
}
