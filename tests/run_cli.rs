//! `vessel run` as a program: argument validation, serial input and output, signals.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{multiboot_guest, out_dir, vessel, TIMEOUT};

fn spin_guest() -> std::path::PathBuf {
    multiboot_guest("spin", &["spin.S"], "multiboot.ld")
}

#[test]
fn invalid_arguments_exit_2_with_a_clear_message() {
    let k = spin_guest();
    let k = k.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--kernel", k, "--memory", "12X"], "unknown unit"),
        (&["run", "--kernel", k, "--memory", "1K"], "at least 2M"),
        (
            &["run", "--kernel", k, "--memory", "abc"],
            "expected a number",
        ),
        (&["run", "--kernel", k, "--cpus", "0"], "--cpus"),
        (&["run", "--kernel", k, "--cpus", "300"], "--cpus"),
        (
            &["run", "--kernel", k, "--serial", "tcp:1"],
            "expected stdio, file:PATH or none",
        ),
        (
            &["run", "--kernel", "/nonexistent/kernel"],
            "does not exist",
        ),
        (&["run"], "--kernel"),
        (
            &["run", "--kernel", k, "--pit", "maybe"],
            "expected auto, on or off",
        ),
        (
            &["--log-level", "loud", "run", "--kernel", k],
            "invalid value 'loud' for '--log-level <LOG_LEVEL>'",
        ),
        (
            &["run", "--kernel", k, "--emulator-fixups", "yes"],
            "invalid emulator-fixups 'yes': expected auto, on or off",
        ),
    ];
    for (args, msg) in cases {
        let r = vessel(args, TIMEOUT);
        assert_eq!(r.status, Some(2), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(msg),
            "{args:?}: want {msg:?} in {}",
            r.stderr
        );
    }
}

#[test]
fn a_file_that_is_no_kernel_is_rejected_before_running() {
    let junk = out_dir().join("not-a-kernel");
    std::fs::write(&junk, b"just some text, not a kernel").unwrap();
    let r = vessel(&["run", "--kernel", junk.to_str().unwrap()], TIMEOUT);
    assert_eq!(r.status, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("unrecognised kernel image"),
        "{}",
        r.stderr
    );
}

#[test]
fn serial_output_can_go_to_a_file() {
    let log = out_dir().join("serial-file.log");
    let _ = std::fs::remove_file(&log);
    let k = multiboot_guest("modes", &["modes.S"], "multiboot.ld");
    let serial = format!("file:{}", log.display());
    let r = vessel(
        &["run", "--kernel", k.to_str().unwrap(), "--serial", &serial],
        TIMEOUT,
    );
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, "");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("hello from 16-bit real mode"), "{text}");
}

#[test]
fn stdin_reaches_the_guest_without_loss() {
    let k = multiboot_guest(
        "echo",
        &["multiboot_header.S", "echo_guest.c"],
        "multiboot.ld",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(["run", "--kernel", k.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Far more than the UART's 64-byte FIFO, written at once.
    let input: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input).unwrap();
    stdin.write_all(b".").unwrap();
    drop(stdin);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < TIMEOUT, "guest did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hash = common::fnv1a(&input);
    let want = format!("received {} bytes fnv1a={hash:#x}", input.len());
    assert!(
        stdout.contains(&want),
        "want {want:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}

fn stop_with_signal(cmdline: &str, signal: i32) {
    let k = spin_guest();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args([
            "run",
            "--kernel",
            k.to_str().unwrap(),
            "--cpus",
            "2",
            "--cmdline",
            cmdline,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    while !String::from_utf8_lossy(&seen).contains("spinning") {
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(n > 0, "guest output ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "vessel did not stop after signal {signal}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("stopped by signal"), "{err}");
}

#[test]
fn sigterm_stops_a_spinning_guest() {
    stop_with_signal("spin", libc::SIGTERM);
}

#[test]
fn sigint_stops_a_halted_guest() {
    stop_with_signal("hlt", libc::SIGINT);
}

#[test]
fn help_names_every_network_mode() {
    for cmd in [&["run", "--help"][..], &["vhost-user-net", "--help"][..]] {
        let r = vessel(cmd, TIMEOUT);
        assert_eq!(r.status, Some(0), "{cmd:?}: {}", r.stderr);
        // clap wraps help text: compare with whitespace folded.
        let help = r.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        for mode in [
            "nat,",
            "natnet:NAME",
            "internal:NAME",
            "hostonly:NAME",
            "bridged:IFACE",
            "tap:NAME",
            "host-loopback=on|off",
        ] {
            assert!(help.contains(mode), "{cmd:?} does not name {mode}:\n{help}");
        }
    }
}

/// A FIFO at `path` (replacing what was there).
fn make_fifo(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_as_disk_exits_2_at_once() {
    let k = spin_guest();
    let fifo = out_dir().join("run-cli-disk.fifo");
    make_fifo(&fifo);
    for disk in [
        fifo.display().to_string(),
        format!("path={},readonly=on", fifo.display()),
        format!("path={},format=raw", fifo.display()),
    ] {
        let started = Instant::now();
        let r = vessel(
            &["run", "--kernel", k.to_str().unwrap(), "--disk", &disk],
            Duration::from_secs(20),
        );
        assert_eq!(r.status, Some(2), "{disk}: {}", r.stderr);
        assert!(
            r.stderr.contains("is a FIFO, not an image"),
            "{disk}: {}",
            r.stderr
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{disk}");
    }
    let _ = std::fs::remove_file(&fifo);
}

/// The VM runs in `vessel-vmm`, which `vessel run` becomes: the process keeps its pid and
/// is named after the VMM; without `vessel-vmm` beside it, `vessel run` says so and fails.
#[test]
fn vessel_run_becomes_vessel_vmm_and_says_when_it_is_missing() {
    let k = spin_guest();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(["run", "--kernel", k.to_str().unwrap(), "--memory", "16M"])
        .args(["--serial", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let comm = format!("/proc/{}/comm", child.id());
    let deadline = Instant::now() + TIMEOUT;
    let mut name = String::new();
    while name.trim() != "vessel-vmm" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        name = std::fs::read_to_string(&comm).unwrap_or_default();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(name.trim(), "vessel-vmm");

    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("vessel");
    std::fs::copy(env!("CARGO_BIN_EXE_vessel"), &alone).unwrap();
    let out = Command::new(&alone)
        .args(["run", "--kernel", k.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("vessel-vmm is missing") && err.contains(dir.path().to_str().unwrap()),
        "{err}"
    );
}

/// `vessel-vmm` refuses what only `vessel` does: `--image` (its run directory is
/// `vessel`'s) and `--state-dir` for `run`.
#[test]
fn vessel_vmm_refuses_image_and_state_dir_for_run() {
    let k = spin_guest();
    let cases: [(&[&str], &str); 2] = [
        (
            &["run", "--image", "debian-12"],
            "--image is prepared by `vessel run`",
        ),
        (
            &[
                "--state-dir",
                "/tmp",
                "run",
                "--kernel",
                k.to_str().unwrap(),
            ],
            "--state-dir is only for",
        ),
    ];
    for (args, wanted) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_vessel-vmm"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(wanted), "{args:?}: {err}");
    }
}
