//! Real Linux network stacks for the backend tests: network namespaces with a tap as the
//! "guest NIC", whose frames a [`net::relay::Relay`] moves to and from a vessel backend.
//! Everything is torn down by guards, also when a test fails.
#![allow(dead_code)]

pub mod services;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use net::tap::TapBackend;

/// Tools the tests run, with the Debian package that has them.
pub const TOOLS: &[(&str, &str)] = &[("ip", "iproute2"), ("busybox", "busybox-static")];

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the test can run here: root, /dev/net/tun, the tools. Prints why not.
pub fn can_run(extra: &[(&str, &str)]) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (network namespaces and taps)");
        return false;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("SKIPPED: /dev/net/tun missing");
        return false;
    }
    for (tool, package) in TOOLS.iter().chain(extra) {
        if !have(tool) {
            eprintln!("SKIPPED: `{tool}` missing (apt-get install {package})");
            return false;
        }
    }
    true
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted (with the processes in it) when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("vt{}-{n}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        let ns = Self { name };
        ns.sh("ip link set lo up");
        ns
    }

    /// Run `script` with `sh -c` inside the namespace.
    pub fn run(&self, script: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Like [`Self::run`], asserting success; returns stdout.
    pub fn sh(&self, script: &str) -> String {
        let out = self.run(script);
        assert!(
            out.status.success(),
            "in {}: {script}: {}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start `command` (exec'd by sh, so killing the child kills it) in the background
    /// inside the namespace.
    pub fn spawn(&self, command: &str) -> Background {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "sh",
                "-c",
                &format!("exec {command}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Background(Some(child))
    }

    /// Create tap `ifname` inside the namespace (it is the guest's NIC), bring it up and
    /// return vessel's end of it.
    pub fn tap(&self, ifname: &str) -> TapBackend {
        self.tap_with(ifname, false)
    }

    /// [`Self::tap`], with frames carrying a virtio-net header on vessel's end when
    /// `vnet_hdr` (offloads).
    pub fn tap_with(&self, ifname: &str, vnet_hdr: bool) -> TapBackend {
        let path = PathBuf::from("/var/run/netns").join(&self.name);
        let ifname = ifname.to_owned();
        let fd: OwnedFd = std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).unwrap();
                // SAFETY: setns on this (scoped, short-lived) thread with a valid netns
                // fd; only this thread changes namespace.
                let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                let tap = TapBackend::open(&ifname, vnet_hdr).unwrap();
                tap.into_fd()
            })
            .join()
            .unwrap()
        });
        self.sh(&format!("ip link set {} up", ifname));
        TapBackend::from_fd(fd, vnet_hdr).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "ip netns pids {0} | xargs -r kill -9; ip netns del {0}",
                    self.name
                ),
            ])
            .status();
    }
}

/// A process started in a namespace, killed when dropped.
pub struct Background(pub Option<std::process::Child>);

impl Background {
    /// Wait for the process (up to `secs`) and return its output.
    pub fn finish(mut self, secs: u64) -> Output {
        let mut child = self.0.take().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Retry `f` until it returns true or `secs` pass.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
