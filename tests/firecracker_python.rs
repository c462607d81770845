//! The unmodified firecracker-python client (PyPI `firecracker-python`, installed by
//! scripts/test.sh into target/fcpy) drives `vessel run --api-sock` through its
//! `firecracker.api.Api`: Firecracker's boot sequence with a root drive (whose `root=` and
//! `rw` reach the guest's command line), a rate-limited drive, a refusal of the Async
//! engine, and a metrics flush (tests/firecracker_python/client.py); PUT /logger and
//! PATCH of drives and interfaces on a running VM, and vsock and balloon configuration
//! (tests/firecracker_python/patch_client.py).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{multiboot_guest, out_dir, wait_for};

/// Where scripts/test.sh installs the client (`FCPY_PATH` overrides).
fn client_path() -> PathBuf {
    std::env::var_os("FCPY_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fcpy"))
}

/// The installed client's site directory and the multiboot guest it boots.
fn client_and_guest() -> (PathBuf, PathBuf) {
    let site = client_path();
    assert!(
        site.join("firecracker/api.py").exists(),
        "firecracker-python is not installed in {} (scripts/test.sh installs it)",
        site.display()
    );
    let kernel = multiboot_guest(
        "multiboot",
        &["multiboot_header.S", "multiboot_guest.c"],
        "multiboot.ld",
    );
    (site, kernel)
}

/// `vessel run --api-sock SOCK --serial SERIAL`, once its socket is there.
fn api_vmm(sock: &Path, serial: &str) -> Child {
    let vmm = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("run")
        .arg("--api-sock")
        .arg(sock)
        .arg("--serial")
        .arg(serial)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the API socket", || sock.exists());
    vmm
}

#[test]
fn firecracker_python_boots_a_root_drive_and_flushes_metrics() {
    let (site, kernel) = client_and_guest();
    let dir = out_dir().join("fcpy");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (sock, serial, disk, metrics) = (
        dir.join("api.sock"),
        dir.join("serial.log"),
        dir.join("rootfs.img"),
        dir.join("metrics.json"),
    );
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    std::fs::write(&metrics, "").unwrap();
    let mut vmm = api_vmm(&sock, &format!("file:{}", serial.display()));
    let client = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/firecracker_python/client.py"
        ))
        .args([&sock, &kernel, &disk, &metrics])
        .env("PYTHONPATH", &site)
        .output()
        .unwrap();
    if !client.status.success() {
        let _ = vmm.kill();
    }
    assert!(
        client.status.success(),
        "client: {}{}",
        String::from_utf8_lossy(&client.stdout),
        String::from_utf8_lossy(&client.stderr)
    );
    let status = vmm.wait().unwrap();
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    // The guest leaves through the debug-exit port: code 0 is status (0 << 1) | 1.
    assert_eq!(status.code(), Some(1), "vessel: {status}; serial: {log}");
    // The kernel's name comes first (argv[0]), then the client's boot_args and the root.
    assert!(log.contains(" exit=0 root=/dev/vda rw\n"), "serial: {log}");
}

#[test]
fn firecracker_python_patches_a_running_vm_and_sets_its_logger() {
    let (site, kernel) = client_and_guest();
    let dir = out_dir().join("fcpy-patch");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("api.sock");
    let mut vmm = api_vmm(&sock, "none");
    let client = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/firecracker_python/patch_client.py"
        ))
        .arg(&sock)
        .arg(&kernel)
        .arg(&dir)
        .env("PYTHONPATH", &site)
        .output()
        .unwrap();
    // The guest halts forever: SIGTERM stops the VM (and vessel) cleanly.
    // SAFETY: kill(2) on the child's pid; no memory is passed.
    unsafe { libc::kill(vmm.id() as i32, libc::SIGTERM) };
    let status = vmm.wait().unwrap();
    assert!(
        client.status.success(),
        "client: {}{}",
        String::from_utf8_lossy(&client.stdout),
        String::from_utf8_lossy(&client.stderr)
    );
    assert!(status.code().is_some(), "vessel died by a signal: {status}");
    // The VMM's log went to the logger's file, with levels shown.
    let log = std::fs::read_to_string(dir.join("vessel.log")).unwrap();
    let swap = format!(
        "vessel: [INFO] disk 0: now {}",
        dir.join("scratch-new.img").display()
    );
    assert!(log.contains(&swap), "log: {log}");
}
