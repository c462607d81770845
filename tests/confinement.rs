//! Confinement of a running VMM (crates/confine): every thread is filtered by seccomp, has
//! no capabilities and no_new_privs; with the test hooks, a guest-reachable path that
//! makes a forbidden system call stops the VMM with the call named, and landlock keeps it
//! from opening files outside the VM's set.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{multiboot_guest, vessel, TIMEOUT};

fn spin_guest() -> std::path::PathBuf {
    multiboot_guest("spin", &["spin.S"], "multiboot.ld")
}

/// Start a halting guest and wait until it prints; returns the VMM process.
fn start_spinning(extra: &[&str]) -> std::process::Child {
    spin_with(Command::new(env!("CARGO_BIN_EXE_vessel")), extra)
}

/// `start_spinning` with `cmd` as the program that runs vessel (it may be `setpriv … vessel`).
fn spin_with(mut cmd: Command, extra: &[&str]) -> std::process::Child {
    let k = spin_guest();
    let mut child = cmd
        .args(["run", "--kernel", k.to_str().unwrap(), "--memory", "16M"])
        .args(["--cmdline", "halt", "--cpus", "2", "--rng"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    while !String::from_utf8_lossy(&seen).contains("spinning") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "guest output ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    child
}

fn stop(mut child: std::process::Child) -> String {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "vessel did not stop"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// `(thread name, status text)` of every thread of `pid`, once every thread has entered
/// its role (a vCPU thread may still be starting when the guest first prints), or after
/// 5 s (the assertions then say which thread is not confined).
fn threads(pid: u32) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = read_threads(pid);
        let settled = list.iter().all(|(_, s)| {
            let seccomp = field(s, "Seccomp:");
            field(s, "NoNewPrivs:") == "1" && (seccomp == "2" || seccomp == "0")
        }) && list
            .iter()
            .map(|(_, s)| field(s, "Seccomp:"))
            .collect::<std::collections::HashSet<_>>()
            .len()
            == 1;
        if settled || Instant::now() > deadline {
            return list;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_threads(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = entry.unwrap().path();
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap();
        out.push((name.trim().to_string(), status));
    }
    out
}

fn field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or("")
}

#[test]
fn every_thread_of_a_running_vm_is_confined() {
    let child = start_spinning(&[]);
    let list = threads(child.id());
    let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
    for role in ["vcpu0", "vcpu1", "io"] {
        assert!(names.contains(&role), "no {role} thread in {names:?}");
    }
    for (name, status) in &list {
        assert_eq!(field(status, "Seccomp:"), "2", "{name}");
        assert_eq!(field(status, "NoNewPrivs:"), "1", "{name}");
        assert_eq!(field(status, "CapEff:"), "0000000000000000", "{name}");
        assert_eq!(field(status, "CapPrm:"), "0000000000000000", "{name}");
        assert_eq!(field(status, "CapBnd:"), "0000000000000000", "{name}");
    }
    let err = stop(child);
    assert!(err.contains("stopped by signal"), "{err}");
}

#[test]
fn with_seccomp_off_threads_have_no_filter_but_no_privileges_either() {
    let child = start_spinning(&["--seccomp=off"]);
    for (name, status) in threads(child.id()) {
        assert_eq!(field(&status, "Seccomp:"), "0", "{name}");
        assert_eq!(field(&status, "NoNewPrivs:"), "1", "{name}");
        assert_eq!(field(&status, "CapEff:"), "0000000000000000", "{name}");
    }
    stop(child);
}

#[test]
fn bad_confinement_flags_are_refused() {
    let k = spin_guest();
    let k = k.to_str().unwrap();
    let r = vessel(&["run", "--kernel", k, "--seccomp=maybe"], TIMEOUT);
    r.expect_status(2);
    assert!(r.stderr.contains("expected on, off or log"), "{}", r.stderr);
    let r = vessel(&["run", "--kernel", k, "--landlock=yes"], TIMEOUT);
    r.expect_status(2);
    assert!(r.stderr.contains("expected on or off"), "{}", r.stderr);
    let r = vessel(
        &["run", "--kernel", k, "--user", "no-such-user-vessel"],
        TIMEOUT,
    );
    r.expect_status(2);
    assert!(r.stderr.contains("unknown user"), "{}", r.stderr);
}

#[test]
fn a_root_vmm_runs_nat_natnet_and_internal_nics_as_another_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: --user needs the test to run as root");
        return;
    }
    let runtime = tempfile::tempdir().unwrap();
    std::env::set_var("XDG_RUNTIME_DIR", runtime.path());
    for nic in ["nat", "natnet:confine", "internal:confine"] {
        let child = start_spinning(&["--user", "nobody", "--nic", nic]);
        for (name, status) in threads(child.id()) {
            let uids: Vec<&str> = field(&status, "Uid:").split_whitespace().collect();
            assert_eq!(uids, ["65534"; 4], "{nic}: {name}");
            assert_eq!(field(&status, "Seccomp:"), "2", "{nic}: {name}");
            assert_eq!(
                field(&status, "CapEff:"),
                "0000000000000000",
                "{nic}: {name}"
            );
        }
        let err = stop(child);
        assert!(err.contains("stopped by signal"), "{nic}: {err}");
    }
}

/// The group /dev/kvm grants read-write access to, when it is not root's.
fn kvm_group() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/dev/kvm").ok()?;
    (meta.gid() != 0 && meta.mode() & 0o060 == 0o060).then_some(meta.gid())
}

/// What issue 15 asks of an unprivileged user in the kvm group: `nat`, `natnet` and
/// `internal` NICs work for a VMM that never had root, confined like any other. As root
/// the test runs vessel as `nobody` with /dev/kvm's group only (scripts/test.sh leaves
/// /dev/kvm root:kvm 0660, as Debian's udev rules do); as another user it runs as itself.
#[test]
fn a_user_in_the_kvm_group_runs_nat_natnet_and_internal_nics() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let runtime = tempfile::tempdir().unwrap();
    let kvm_gid = kvm_group();
    if root {
        if kvm_gid.is_none() {
            eprintln!("skipped: /dev/kvm is root's alone (scripts/test.sh gives it a kvm group)");
            return;
        }
        let path = std::ffi::CString::new(runtime.path().to_str().unwrap()).unwrap();
        // SAFETY: chown of a directory this test made, by a NUL-terminated path.
        assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0);
    }
    for nic in ["nat", "natnet:unpriv", "internal:unpriv"] {
        let cmd = match kvm_gid.filter(|_| root) {
            Some(gid) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid=65534", "--regid=65534"])
                    .arg(format!("--groups={gid}"))
                    .arg(env!("CARGO_BIN_EXE_vessel"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_vessel")),
        };
        let mut cmd = cmd;
        cmd.env("XDG_RUNTIME_DIR", runtime.path());
        let child = spin_with(cmd, &["--nic", nic]);
        for (name, status) in threads(child.id()) {
            let uids: Vec<&str> = field(&status, "Uid:").split_whitespace().collect();
            assert!(uids.iter().all(|u| *u != "0"), "{nic}: {name}: {uids:?}");
            if root {
                assert_eq!(uids, ["65534"; 4], "{nic}: {name}");
            }
            assert_eq!(field(&status, "Seccomp:"), "2", "{nic}: {name}");
            assert_eq!(field(&status, "NoNewPrivs:"), "1", "{nic}: {name}");
            assert_eq!(
                field(&status, "CapEff:"),
                "0000000000000000",
                "{nic}: {name}"
            );
        }
        let err = stop(child);
        assert!(err.contains("stopped by signal"), "{nic}: {err}");
    }
}

/// Pids of the processes whose parent is `pid` and whose name is `name`.
fn children_named(pid: u32, name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // "PID (COMM) STATE PPID ..."
            let Some((comm, rest)) = stat.split_once(") ") else {
                return false;
            };
            comm.ends_with(&format!("({name}"))
                && rest.split_whitespace().nth(1) == Some(pid.to_string().as_str())
        })
        .collect()
}

/// A shared folder under a root VMM that drops to `nobody`: virtiofsd, started during
/// set-up, runs while the VM does; at the end the VMM (no longer allowed to signal a root
/// virtiofsd) closes the connection, which ends virtiofsd, and reaps it, all within its
/// seccomp filters.
#[test]
fn a_root_vmm_with_a_share_stops_its_virtiofsd_as_another_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: --user needs the test to run as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let share = format!("{}:data", dir.path().display());
    let child = start_spinning(&["--user", "nobody", "--share", &share]);
    let pid = child.id();
    let daemons = children_named(pid, "virtiofsd");
    assert_eq!(daemons.len(), 1, "one virtiofsd for the share");
    for (name, status) in threads(pid) {
        let uids: Vec<&str> = field(&status, "Uid:").split_whitespace().collect();
        assert_eq!(uids, ["65534"; 4], "{name}");
    }
    let err = stop(child);
    assert!(err.contains("stopped by signal"), "{err}");
    for d in daemons {
        assert!(
            !std::path::Path::new(&format!("/proc/{d}")).exists(),
            "virtiofsd {d} outlived the VM:\n{err}"
        );
    }
}

#[test]
fn user_is_refused_without_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let k = spin_guest();
        // As root the flag is accepted; run as nobody under runuser when available.
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_vessel"))
            .args(["run", "--kernel", k.to_str().unwrap(), "--user", "root"])
            .output();
        let Ok(out) = out else {
            eprintln!("skipped: no setpriv to run as another user");
            return;
        };
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("--user needs vessel to start as root"),
            "{err}"
        );
    }
}

/// Start `vessel vhost-user-blk` on a scratch disk with `extra` flags and wait until it
/// listens (it confines itself right before saying so).
fn start_blk_backend(dir: &std::path::Path, extra: &[&str]) -> std::process::Child {
    let disk = dir.join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let socket = dir.join("blk.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(["vhost-user-blk", "--socket", socket.to_str().unwrap()])
        .args(["--disk", &format!("{},format=raw", disk.display())])
        .args(extra)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    while !String::from_utf8_lossy(&seen).contains("listening on") {
        let n = stderr.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "backend ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    // Kept open: the backend says why it stops on stderr, and a closed pipe would fail it.
    child.stderr = Some(stderr);
    child
}

#[test]
fn vhost_user_backend_takes_the_confinement_flags() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, seccomp) in [(&[][..], "2"), (&["--seccomp=off"][..], "0")] {
        let child = start_blk_backend(dir.path(), flags);
        for (name, status) in threads(child.id()) {
            assert_eq!(field(&status, "Seccomp:"), seccomp, "{flags:?} {name}");
            assert_eq!(field(&status, "NoNewPrivs:"), "1", "{flags:?} {name}");
            assert_eq!(field(&status, "CapEff:"), "0000000000000000", "{name}");
        }
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{flags:?}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r = vessel(
        &[
            "vhost-user-net",
            "--socket",
            "x",
            "--nic",
            "nat",
            "--landlock=yes",
        ],
        TIMEOUT,
    );
    r.expect_status(2);
    assert!(r.stderr.contains("expected on or off"), "{}", r.stderr);
}
