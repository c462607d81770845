//! `vessel run --jail DIR`: the VMM runs in its own mount and PID namespaces with DIR/root as
//! `/`, holding only the VM's files; checked from outside through /proc/PID of the VMM.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{multiboot_guest, out_dir, vessel, TIMEOUT};

fn spin_guest() -> PathBuf {
    multiboot_guest("spin", &["spin.S"], "multiboot.ld")
}

/// A fresh, empty jail directory for one test.
fn jail_dir(name: &str) -> PathBuf {
    let d = out_dir().join(format!("jail-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Start vessel with `args` and wait until the spin guest has printed "spinning".
fn start_spinning(args: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(args)
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
        if n == 0 {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("guest output ended early: {err}");
        }
        seen.extend_from_slice(&buf[..n]);
    }
    child
}

/// The VMM's pid, from DIR/vmm.pid.
fn vmm_pid(dir: &Path) -> u32 {
    let text = std::fs::read_to_string(dir.join("vmm.pid")).unwrap();
    text.trim().parse().unwrap()
}

/// Stop vessel with SIGTERM (the parent forwards it to the VMM); its stderr.
fn stop(mut child: Child) -> String {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "vessel did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    err
}

fn status_field(pid: u32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// Every path under `root`, relative to it.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            }
        }
    }
    out
}

fn root_only() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: --jail needs root");
    }
    root
}

#[test]
fn a_guest_boots_and_exits_normally_in_a_jail() {
    if !root_only() {
        return;
    }
    let dir = jail_dir("boot");
    let k = multiboot_guest("modes", &["modes.S"], "multiboot.ld");
    let r = vessel(
        &[
            "run",
            "--kernel",
            k.to_str().unwrap(),
            "--jail",
            dir.to_str().unwrap(),
            "--serial",
            "file:/serial.log",
        ],
        TIMEOUT,
    );
    r.expect_status(0);
    // The serial log is a path inside the jail: DIR/root/serial.log on the host.
    let log = std::fs::read_to_string(dir.join("root/serial.log")).unwrap();
    assert!(log.contains("hello from 16-bit real mode"), "{log}");
    assert!(!dir.join("vmm.pid").exists(), "vmm.pid left behind");
    // The same directory can be used again: it is vessel's now.
    let r = vessel(
        &[
            "run",
            "--kernel",
            k.to_str().unwrap(),
            "--jail",
            dir.to_str().unwrap(),
        ],
        TIMEOUT,
    );
    r.expect_status(0)
        .expect_stdout("hello from 16-bit real mode");
}

/// A qcow2 disk over a raw backing file: both go into the jail, the backing file read-only.
fn chain(name: &str) -> (PathBuf, PathBuf) {
    let base = out_dir().join(format!("jail-{name}-base.raw"));
    let top = out_dir().join(format!("jail-{name}-top.qcow2"));
    let _ = std::fs::remove_file(&base);
    let _ = std::fs::remove_file(&top);
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    let backing = format!("jail-{name}-base.raw");
    let r = vessel(
        &[
            "disk",
            "create",
            top.to_str().unwrap(),
            "--format",
            "qcow2",
            "--backing",
            &backing,
        ],
        TIMEOUT,
    );
    r.expect_status(0);
    (top, base)
}

#[test]
fn the_vmm_sees_only_what_vessel_put_in_the_jail() {
    if !root_only() {
        return;
    }
    let dir = jail_dir("view");
    let k = spin_guest();
    let (top, base) = chain("view");
    let disk = format!("path={},format=qcow2", top.display());
    let child = start_spinning(&[
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--cmdline",
        "spin",
        "--disk",
        &disk,
        "--jail",
        dir.to_str().unwrap(),
    ]);
    let pid = vmm_pid(&dir);
    assert_eq!(status_field(pid, "PPid:"), child.id().to_string());
    // Its / is DIR/root (the same directory, seen through the bind mount).
    let proc_root = PathBuf::from(format!("/proc/{pid}/root"));
    let (a, b) = (
        std::fs::metadata(&proc_root).unwrap(),
        std::fs::metadata(dir.join("root")).unwrap(),
    );
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    for ns in ["mnt", "pid", "net"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(theirs, ours, "the VMM shares the test's {ns} namespace");
    }
    // PID 1 in its namespace.
    let nspid = status_field(pid, "NSpid:");
    assert!(nspid.ends_with("\t1"), "NSpid: {nspid}");
    // Its whole file system: the kernel, the disk and its backing file, /dev/kvm.
    let files: BTreeSet<PathBuf> = tree(&proc_root)
        .into_iter()
        .filter(|p| !std::fs::metadata(proc_root.join(p)).unwrap().is_dir())
        .collect();
    let want: BTreeSet<PathBuf> = [k.as_path(), top.as_path(), base.as_path()]
        .iter()
        .map(|p| p.strip_prefix("/").unwrap().to_path_buf())
        .chain([PathBuf::from("dev/kvm")])
        .collect();
    assert_eq!(files, want);
    assert!(!proc_root.join("etc/passwd").exists());
    // Writable where the VM writes, read-only elsewhere.
    let inside = |p: &Path| proc_root.join(p.strip_prefix("/").unwrap());
    let open_rw = |p: &Path| std::fs::OpenOptions::new().write(true).open(inside(p));
    assert!(open_rw(&top).is_ok());
    for ro in [&base, &k] {
        let err = open_rw(ro).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{}", ro.display());
    }
    let err = stop(child);
    assert!(err.contains("stopped by signal"), "{err}");
    assert!(!dir.join("vmm.pid").exists());
}

#[test]
fn the_vmm_runs_as_the_given_user() {
    if !root_only() {
        return;
    }
    let dir = jail_dir("uid");
    let k = spin_guest();
    let child = start_spinning(&[
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--cmdline",
        "spin",
        "--jail",
        dir.to_str().unwrap(),
        "--uid",
        "65534",
        "--gid",
        "65534",
    ]);
    let pid = vmm_pid(&dir);
    assert!(status_field(pid, "Uid:").starts_with("65534\t65534\t65534"));
    assert!(status_field(pid, "Gid:").starts_with("65534\t65534\t65534"));
    assert_eq!(status_field(pid, "Groups:"), "");
    let kvm = std::fs::metadata(format!("/proc/{pid}/root/dev/kvm")).unwrap();
    assert_eq!(
        (kvm.uid(), kvm.gid(), kvm.mode() & 0o777),
        (65534, 65534, 0o600)
    );
    stop(child);
}

/// The cgroup2 mount point and its available controllers, as vessel finds them.
fn cgroup2() -> Option<(PathBuf, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut mounts = info.lines().filter_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap()))
    });
    let all: Vec<PathBuf> = mounts.by_ref().collect();
    let m = all
        .iter()
        .find(|p| *p == Path::new("/sys/fs/cgroup"))
        .or(all.first())?
        .clone();
    let ctl = std::fs::read_to_string(m.join("cgroup.controllers")).unwrap_or_default();
    Some((m, ctl))
}

#[test]
fn cgroup_limits_are_applied_while_the_vm_runs() {
    if !root_only() {
        return;
    }
    let dir = jail_dir("cgroup");
    let k = spin_guest();
    let args = [
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--cmdline",
        "spin",
        "--memory",
        "64M",
        "--jail",
        dir.to_str().unwrap(),
        "--jail-cgroup",
        "memory.max=256M",
        "--jail-cgroup",
        "pids.max=64",
    ];
    let Some((mount, controllers)) = cgroup2() else {
        let r = vessel(&args, TIMEOUT);
        r.expect_status(2);
        assert!(
            r.stderr.contains("cgroup v2 is not mounted"),
            "{}",
            r.stderr
        );
        return;
    };
    let has = |c| controllers.split_whitespace().any(|x| x == c);
    if !(has("memory") && has("pids")) {
        // Hybrid hosts keep these controllers in cgroup v1: vessel must say so, not ignore
        // the limits.
        let r = vessel(&args, TIMEOUT);
        r.expect_status(2);
        assert!(
            r.stderr.contains("controller is not available"),
            "{}",
            r.stderr
        );
        eprintln!(
            "note: memory/pids not in {}/cgroup.controllers; only the refusal was tested",
            mount.display()
        );
        return;
    }
    let child = start_spinning(&args);
    let pid = vmm_pid(&dir);
    let cg = mount.join("vessel/jail-cgroup");
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    let read = |f: &str| std::fs::read_to_string(cg.join(f)).unwrap();
    assert_eq!(read("memory.max").trim(), "268435456");
    assert_eq!(read("pids.max").trim(), "64");
    stop(child);
    assert!(!cg.exists(), "the cgroup was not removed");
}

#[test]
fn bad_jail_input_is_refused_clearly() {
    let k = spin_guest();
    let k = k.to_str().unwrap();
    let busy = jail_dir("not-empty");
    std::fs::write(busy.join("something"), "x").unwrap();
    let busy = busy.to_str().unwrap().to_string();
    let fresh = jail_dir("bad-input");
    let fresh = fresh.to_str().unwrap().to_string();
    let missing = out_dir().join("jail-missing");
    let missing = missing.to_str().unwrap().to_string();
    let base = ["run", "--kernel", k];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--jail", &busy], "is not empty and not vessel's"),
        (vec!["--jail", "relative/dir"], "must be an absolute path"),
        (vec!["--jail", &missing], "does not exist"),
        (
            vec!["--jail", &fresh, "--jail-cgroup", "cpuset.cpus=0"],
            "unknown cgroup key",
        ),
        (
            vec!["--jail", &fresh, "--jail-cgroup", "memory.max=lots"],
            "invalid value 'lots'",
        ),
        (
            vec!["--jail", &fresh, "--jail-cgroup", "memory.max"],
            "expected KEY=VALUE",
        ),
        (
            vec![
                "--jail",
                &fresh,
                "--jail-cgroup",
                "pids.max=5",
                "--jail-cgroup",
                "pids.max=6",
            ],
            "given twice",
        ),
        (vec!["--jail-cgroup", "memory.max=1G"], "--jail"),
        (vec!["--jail", &fresh, "--uid", "1000"], "--gid"),
        (vec!["--uid", "1", "--gid", "1"], "--jail"),
        (
            vec!["--jail", &fresh, "--nic", "nat"],
            "only tap:NAME NICs work",
        ),
        (
            vec!["--jail", &fresh, "--serial", "file:rel.log"],
            "must be absolute",
        ),
        (
            vec!["--jail", &fresh, "--console2", "file:rel.log"],
            "must be absolute",
        ),
    ];
    for (extra, msg) in cases {
        let args: Vec<&str> = base.iter().copied().chain(extra).collect();
        let r = vessel(&args, TIMEOUT);
        assert_eq!(r.status, Some(2), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(msg),
            "{args:?}: want {msg:?} in {}",
            r.stderr
        );
    }
    // Not supported in a jail: refused, not ignored.
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "--api-sock", "/tmp/x.sock", "--jail", &fresh],
            "cannot be used with",
        ),
        (
            vec!["run", "--image", "debian", "--jail", &fresh],
            "cannot be used with",
        ),
    ];
    for (args, msg) in cases {
        let r = vessel(&args, TIMEOUT);
        assert_eq!(r.status, Some(2), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(msg),
            "{args:?}: want {msg:?} in {}",
            r.stderr
        );
    }
}

#[test]
fn a_tap_nic_works_in_a_jail_on_the_hosts_network() {
    if !root_only() {
        return;
    }
    let tap = "vjail0";
    let _ = Command::new("ip").args(["link", "del", tap]).output();
    let made = Command::new("ip")
        .args(["tuntap", "add", "dev", tap, "mode", "tap"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let dir = jail_dir("tap");
    let k = spin_guest();
    let nic = format!("tap:{tap}");
    let child = start_spinning(&[
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--cmdline",
        "spin",
        "--nic",
        &nic,
        "--jail",
        dir.to_str().unwrap(),
    ]);
    let pid = vmm_pid(&dir);
    let tun = std::fs::metadata(format!("/proc/{pid}/root/dev/net/tun")).unwrap();
    assert_eq!(
        tun.rdev(),
        std::fs::metadata("/dev/net/tun").unwrap().rdev()
    );
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_eq!(theirs, std::fs::read_link("/proc/self/ns/net").unwrap());
    stop(child);
    let _ = Command::new("ip").args(["link", "del", tap]).output();
}
