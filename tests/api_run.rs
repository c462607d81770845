//! `vessel run --api-sock`: a Firecracker-style client configures and boots a VM over the
//! REST API on a unix socket (curl as the client), then pauses, resumes and stops it.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::api::curl;
use common::{multiboot_guest, out_dir, wait_for, TIMEOUT};

struct Vmm(Child);
impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[test]
fn firecracker_style_client_boots_pauses_resumes_and_stops_a_vm() {
    let kernel = multiboot_guest(
        "service",
        &["multiboot_header.S", "service_guest.c"],
        "multiboot.ld",
    );
    let sock = out_dir().join("api-run.sock");
    // A socket left by an earlier run would look ready before this VMM listens.
    let _ = std::fs::remove_file(&sock);
    let serial = out_dir().join("api-run-serial.log");
    let _ = std::fs::remove_file(&serial);
    let child = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args([
            "run",
            "--api-sock",
            sock.to_str().unwrap(),
            "--serial",
            &format!("file:{}", serial.display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut vmm = Vmm(child);
    wait_for("the API socket", || sock.exists());

    let (code, body) = curl(&sock, "GET", "/", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"state\":\"Not started\""), "{body}");
    assert_eq!(
        curl(
            &sock,
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count": 2, "mem_size_mib": 64}"#)
        )
        .0,
        204
    );
    let boot = format!(
        r#"{{"kernel_image_path": {:?}, "boot_args": "service"}}"#,
        kernel.display().to_string()
    );
    assert_eq!(curl(&sock, "PUT", "/boot-source", Some(&boot)).0, 204);
    // Pre-boot rules: actions that need a running VM are refused with a reason.
    let (code, body) = curl(&sock, "PATCH", "/vm", Some(r#"{"state": "Paused"}"#));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("fault_message"), "{body}");
    assert_eq!(
        curl(
            &sock,
            "PUT",
            "/actions",
            Some(r#"{"action_type": "InstanceStart"}"#)
        )
        .0,
        204
    );
    wait_for("the guest", || {
        std::fs::read_to_string(&serial)
            .unwrap_or_default()
            .contains("service up")
    });
    assert!(curl(&sock, "GET", "/", None)
        .1
        .contains("\"state\":\"Running\""));
    let (code, body) = curl(
        &sock,
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count": 1, "mem_size_mib": 64}"#),
    );
    assert_eq!(code, 400, "{body}");
    let (code, config) = curl(&sock, "GET", "/vm/config", None);
    assert_eq!(code, 200);
    assert!(config.contains("\"vcpu_count\":2"), "{config}");
    assert!(
        config.contains(&format!(
            "\"kernel_image_path\":{:?}",
            kernel.display().to_string()
        )),
        "{config}"
    );

    assert_eq!(
        curl(&sock, "PATCH", "/vm", Some(r#"{"state": "Paused"}"#)).0,
        204
    );
    assert!(curl(&sock, "GET", "/", None)
        .1
        .contains("\"state\":\"Paused\""));
    assert_eq!(
        curl(&sock, "PATCH", "/vm", Some(r#"{"state": "Resumed"}"#)).0,
        204
    );
    assert!(curl(&sock, "GET", "/", None)
        .1
        .contains("\"state\":\"Running\""));

    // Ctrl-Alt-Del: the guest powers off and the VMM exits with status 0.
    assert_eq!(
        curl(
            &sock,
            "PUT",
            "/actions",
            Some(r#"{"action_type": "SendCtrlAltDel"}"#)
        )
        .0,
        204
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = vmm.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "VMM did not exit after Ctrl-Alt-Del"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    vmm.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(std::fs::read_to_string(&serial)
        .unwrap()
        .contains("powering off"));
    assert!(!sock.exists(), "the API socket is removed on exit");
}

#[test]
fn api_mode_refuses_a_kernel_on_the_command_line_too() {
    let r = common::vessel(
        &["run", "--api-sock", "/tmp/x.sock", "--kernel", "/bin/true"],
        TIMEOUT,
    );
    assert_eq!(r.status, Some(2));
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
}

/// A kernel path naming `/dev/zero` or a FIFO is refused with a 400 (not read until memory
/// runs out, not waited on), at PUT /boot-source and again at InstanceStart when the path
/// was swapped after its check; the VMM stays usable.
#[test]
fn device_files_and_fifos_are_no_kernels() {
    let vmm = common::api::ApiVmm::spawn("api-run-kernels", &[]);
    let sock = vmm.sock.clone();
    let boot = |path: &std::path::Path| {
        let body = format!(
            r#"{{"kernel_image_path": {:?}}}"#,
            path.display().to_string()
        );
        curl(&sock, "PUT", "/boot-source", Some(&body))
    };
    let (code, body) = boot(std::path::Path::new("/dev/zero"));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("character device, not a regular file"),
        "{body}"
    );
    let fifo = out_dir().join("api-run-kernel.fifo");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let started = Instant::now();
    let (code, body) = boot(&fifo);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("FIFO, not a regular file"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Checked at PUT /boot-source, then swapped for /dev/zero: InstanceStart refuses it.
    let kernel = out_dir().join("api-run-swapped-kernel");
    let _ = std::fs::remove_file(&kernel);
    std::fs::write(&kernel, b"not a kernel yet").unwrap();
    assert_eq!(boot(&kernel).0, 204);
    std::fs::remove_file(&kernel).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &kernel).unwrap();
    let (code, body) = curl(
        &sock,
        "PUT",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("is a character device, not a regular file"),
        "{body}"
    );
    let (code, body) = curl(&sock, "GET", "/", None);
    assert_eq!(code, 200, "{body}");
    let _ = std::fs::remove_file(&kernel);
    let _ = std::fs::remove_file(&fifo);
}

/// A FIFO (or `/dev/zero`) named as a drive through the API is refused with a 400 at
/// PUT /drives, without waiting for a writer; the VMM stays usable.
#[test]
fn fifos_and_devices_are_no_drives() {
    let vmm = common::api::ApiVmm::spawn("api-run-drives", &[]);
    let sock = vmm.sock.clone();
    let fifo = out_dir().join("api-run-drive.fifo");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let drive = |path: &std::path::Path, read_only: bool| {
        let body = format!(
            r#"{{"drive_id": "rootfs", "path_on_host": {:?}, "is_root_device": false, "is_read_only": {read_only}}}"#,
            path.display().to_string()
        );
        curl(&sock, "PUT", "/drives/rootfs", Some(&body))
    };
    for read_only in [true, false] {
        let started = Instant::now();
        let (code, body) = drive(&fifo, read_only);
        assert_eq!(code, 400, "{body}");
        assert!(body.contains("FIFO"), "{body}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let (code, body) = drive(std::path::Path::new("/dev/zero"), true);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("character device"), "{body}");
    let (code, body) = curl(&sock, "GET", "/", None);
    assert_eq!(code, 200, "{body}");
    let _ = std::fs::remove_file(&fifo);
}
