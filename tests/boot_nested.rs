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
    boot_debian_within(extra, extra_cmdline, Duration::from_secs(30 * 60))
}

/// [`boot_debian`], allowed `limit` to finish.
fn boot_debian_within(extra: &[&str], extra_cmdline: &str, limit: Duration) -> common::Run {
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
    vessel(&args, limit)
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

/// Two shares for nested-virtiofs.sh under `name` in the test directory: `rw` with 1 MiB
/// of random data in host.bin, `ro` (shared readonly) with ro.txt.
fn virtiofs_dirs(name: &str) -> (PathBuf, PathBuf) {
    let base = common::out_dir().join(name);
    let _ = std::fs::remove_dir_all(&base);
    let (rw, ro) = (base.join("rw"), base.join("ro"));
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    let mut data = vec![0u8; 1 << 20];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut data)
        .unwrap();
    std::fs::write(rw.join("host.bin"), &data).unwrap();
    std::fs::write(ro.join("ro.txt"), "readonly content\n").unwrap();
    (rw, ro)
}

/// Whether a virtiofsd serving `dir` is still running.
fn virtiofsd_running_for(dir: &Path) -> bool {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
        std::fs::read(p.path().join("cmdline")).is_ok_and(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains("virtiofsd") && c.contains(&needle)
        })
    })
}

/// Boot the Debian guest with a writable and a readonly share (and `extra` arguments) and
/// check what nested-virtiofs.sh reports and what it left on the host.
fn guest_uses_shares(name: &str, extra: &[&str]) {
    let (rw, ro) = virtiofs_dirs(name);
    let rw_arg = format!("{}:hostdir", rw.display());
    let ro_arg = format!("{}:rodir,readonly=on", ro.display());
    let mut args = vec!["--share", rw_arg.as_str(), "--share", ro_arg.as_str()];
    args.extend_from_slice(extra);
    // Only the virtio-pci modules before the test's fuse and virtiofs: every module load
    // costs minutes where ring 0 is emulated.
    let r = boot_debian_within(
        &args,
        "vessel.modules=virtio_ring,virtio,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio_pci \
         vessel.test=nested-virtiofs",
        Duration::from_secs(55 * 60),
    );
    r.expect_stdout("VESSEL-TEST-PASS nested-virtiofs");
    r.expect_status(0);
    assert_eq!(
        guest_result(&r.stdout, "sha256_host"),
        sha256_file(&rw.join("host.bin"))
    );
    assert_eq!(
        std::fs::read_to_string(rw.join("guest.txt")).unwrap(),
        "written by the guest\n"
    );
    assert_eq!(guest_result(&r.stdout, "ro_file"), "readonly content");
    let refused = guest_result(&r.stdout, "ro_write");
    assert!(refused.contains("Read-only file system"), "{refused}");
    assert!(!ro.join("new.txt").exists());
    assert!(
        !virtiofsd_running_for(&rw) && !virtiofsd_running_for(&ro),
        "virtiofsd outlived the VM"
    );
    eprintln!("time to power-off: {:?}", r.elapsed);
}

/// Linux's virtiofs driver mounts shares that virtiofsd serves through vessel's vhost-user-fs
/// PCI device (its queues handed to virtiofsd, interrupts through the MSI-X irqfds): the
/// guest reads a host file, writes one the host sees, and a readonly share refuses writes.
#[test]
fn debian_kernel_mounts_vessels_virtio_fs_shares() {
    guest_uses_shares("nested-virtiofs", &[]);
}

/// VmRSS of process `pid`, in KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// `GET /balloon/statistics` as JSON.
fn balloon_statistics(vmm: &common::api::ApiVmm) -> serde_json::Value {
    let (code, body) = common::api::curl(&vmm.sock, "GET", "/balloon/statistics", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Poll the balloon's statistics until the driver holds `mib` MiB.
fn wait_for_balloon(vmm: &common::api::ApiVmm, mib: u64) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let stats = balloon_statistics(vmm);
        if stats["actual_mib"] == mib {
            return stats;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30 * 60),
            "the balloon never reached {mib} MiB: {stats}\n{}",
            vmm.serial()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait (at most 60 minutes: the boot is slow where ring 0 is emulated, and slower on a
/// loaded host) for `marker` on the serial console.
fn wait_for_serial(vmm: &mut common::api::ApiVmm, marker: &str) {
    let start = std::time::Instant::now();
    while !vmm.serial().contains(marker) {
        let exited = vmm.child.try_wait().unwrap();
        assert!(
            exited.is_none() && start.elapsed() < Duration::from_secs(60 * 60),
            "no {marker} ({exited:?}):\n{}",
            vmm.serial()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Linux's virtio_balloon driver against vessel's balloon through Firecracker's API, across
/// a snapshot: the booted guest is snapshotted and loaded into a second VMM as a copy
/// (`VESSEL_SNAPSHOT_MEMORY=copy`), which makes all its RAM resident in the VMM — on
/// kvm_pvm a guest writes new memory at about 0.4 MiB/s, so having the guest fill its RAM
/// (filling 700 MiB took 30 min on 2026-12-06) does not fit CI. Then `PATCH /balloon`
/// inflates the balloon by 128 MiB and the VMM's RSS drops by at least 100 MiB,
/// `GET /balloon/statistics` reports the guest's own figures, and the balloon deflates.
/// (On kvm_pvm the driver inflates at about 0.5 MiB/s, so 128 MiB is what CI can afford;
/// docs/balloon.md has the figures of a 512 MiB run.)
#[test]
fn debian_kernel_gives_memory_back_through_vessels_balloon() {
    let (kernel, initrd) = debian_guest();
    let mut first = common::api::ApiVmm::spawn("nested-balloon", &[]);
    let cmdline = format!("{} vessel.test=nested-balloon", nested_cmdline());
    let boot = serde_json::json!({
        "kernel_image_path": kernel,
        "initrd_path": initrd,
        "boot_args": cmdline,
    });
    for (method, path, body) in [
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 1, "mem_size_mib": 384}"#.to_string(),
        ),
        ("PUT", "/boot-source", boot.to_string()),
        (
            "PUT",
            "/balloon",
            r#"{"amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": 1}"#
                .to_string(),
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type": "InstanceStart"}"#.to_string(),
        ),
    ] {
        let (code, answer) = first.call(method, path, &body);
        assert_eq!(code, 204, "{method} {path}: {answer}");
    }
    wait_for_serial(&mut first, "VESSEL-BALLOON-READY");
    let state = common::out_dir().join("nested-balloon.state");
    let memory = common::out_dir().join("nested-balloon.mem");
    for file in [&state, &memory] {
        let _ = std::fs::remove_file(file);
    }
    assert_eq!(first.call("PATCH", "/vm", r#"{"state": "Paused"}"#).0, 204);
    let create = serde_json::json!({"snapshot_path": state, "mem_file_path": memory});
    let (code, answer) = first.call("PUT", "/snapshot/create", &create.to_string());
    assert_eq!(code, 204, "{answer}");
    drop(first);
    let mut vmm = common::api::ApiVmm::spawn_with_env(
        "nested-balloon-copy",
        &[],
        &[("VESSEL_SNAPSHOT_MEMORY", "copy")],
    );
    let load =
        serde_json::json!({"snapshot_path": state, "mem_file_path": memory, "resume_vm": true});
    let (code, answer) = vmm.call("PUT", "/snapshot/load", &load.to_string());
    assert_eq!(code, 204, "{answer}");
    let pid = vmm.child.id();
    let full = vm_rss_kib(pid);
    assert!(
        full >= 380 * 1024,
        "the copied RAM is resident: VmRSS {full} KiB"
    );
    let start = std::time::Instant::now();
    let (code, answer) = vmm.call("PATCH", "/balloon", r#"{"amount_mib": 128}"#);
    assert_eq!(code, 204, "{answer}");
    let inflated = wait_for_balloon(&vmm, 128);
    let reclaim = start.elapsed();
    let after = vm_rss_kib(pid);
    eprintln!("VmRSS {full} KiB -> {after} KiB after inflating 128 MiB in {reclaim:?}; {inflated}");
    assert!(
        full.saturating_sub(after) >= 100 * 1024,
        "VmRSS fell by {} KiB only",
        full.saturating_sub(after)
    );
    wait_for_serial(&mut vmm, "VESSEL-BALLOON-INFLATED");
    let stats = balloon_statistics(&vmm);
    for key in ["free_memory", "total_memory", "available_memory"] {
        assert!(stats[key].as_u64().is_some_and(|v| v > 0), "{key}: {stats}");
    }
    assert!(
        stats["total_memory"].as_u64().unwrap() < 384 << 20,
        "the guest's total memory excludes what it gave away: {stats}"
    );
    let (code, answer) = vmm.call("PATCH", "/balloon", r#"{"amount_mib": 0}"#);
    assert_eq!(code, 204, "{answer}");
    wait_for_balloon(&vmm, 0);
    let (status, stderr) = vmm.wait_exit(Duration::from_secs(30 * 60));
    let serial = vmm.serial();
    assert!(
        serial.contains("VESSEL-TEST-PASS nested-balloon"),
        "{serial}\n{stderr}"
    );
    assert_eq!(status, Some(0), "{stderr}");
    eprintln!("time to reclaim 128 MiB: {reclaim:?}; statistics: {stats}");
}
