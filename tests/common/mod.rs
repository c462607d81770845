//! Shared helpers of the integration tests: building test guests from tests/guests with the
//! system's gcc/as/ld, and running vessel with a deadline so a hang fails the test.

#![allow(dead_code)]

pub mod api;
pub mod boot_image;
pub mod containerd;
pub mod cri;
pub mod nested;
pub mod sshd;
pub mod state_dir;
pub mod tcg;
pub mod vagrant;
pub mod virtiofsd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static BUILD_LOCK: Mutex<()> = Mutex::new(());

pub fn guests_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests")
}

pub fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guests");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run_tool(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const CFLAGS: &[&str] = &[
    "-ffreestanding",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-nostdlib",
    "-O2",
    "-Wall",
    "-Werror",
    "-Wno-unused-function",
];

/// Build a 32-bit multiboot guest from `asm` and optional C sources; returns the ELF path.
pub fn multiboot_guest(name: &str, sources: &[&str], linker_script: &str) -> PathBuf {
    let script = guests_src().join(linker_script);
    link_multiboot(name, sources, &["-T".as_ref(), script.as_os_str()])
}

/// Build a 32-bit multiboot guest linked the default GNU ld way (`-Ttext 0x100000`, no
/// script), as many hobby and test kernels are.
pub fn multiboot_guest_default_ld(name: &str, sources: &[&str]) -> PathBuf {
    link_multiboot(name, sources, &["-Ttext".as_ref(), "0x100000".as_ref()])
}

fn link_multiboot(name: &str, sources: &[&str], link_args: &[&std::ffi::OsStr]) -> PathBuf {
    let _g = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let out = out_dir().join(name);
    let src = guests_src();
    let mut objs = Vec::new();
    for s in sources {
        let obj = out_dir().join(format!("{name}-{s}.o"));
        run_tool(
            Command::new("gcc")
                .args(["-m32", "-c"])
                .args(CFLAGS)
                .arg(src.join(s))
                .arg("-o")
                .arg(&obj),
        );
        objs.push(obj);
    }
    // Linked beside and renamed into place: a test of the same binary may be booting the
    // previous build of this guest right now, and must never read a half-written one.
    let partial = out_dir().join(format!("{name}.partial-{}", std::process::id()));
    run_tool(
        Command::new("ld")
            .args([
                "-m",
                "elf_i386",
                "-nostdlib",
                "-z",
                "noexecstack",
                "--no-warn-rwx-segments",
            ])
            .args(link_args)
            .arg("-o")
            .arg(&partial)
            .args(&objs),
    );
    std::fs::rename(&partial, &out).unwrap();
    out
}

/// Build a 64-bit ELF guest (Linux 64-bit boot protocol or PVH) from sources.
pub fn elf64_guest(name: &str, sources: &[&str], linker_script: &str) -> PathBuf {
    let _g = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let out = out_dir().join(name);
    let partial = out_dir().join(format!("{name}.partial-{}", std::process::id()));
    let src = guests_src();
    let mut objs = Vec::new();
    for s in sources {
        let obj = out_dir().join(format!("{name}-{s}.o"));
        run_tool(
            Command::new("gcc")
                .args(["-m64", "-mno-red-zone", "-mgeneral-regs-only", "-c"])
                .args(CFLAGS)
                .arg(src.join(s))
                .arg("-o")
                .arg(&obj),
        );
        objs.push(obj);
    }
    run_tool(
        Command::new("ld")
            .args([
                "-m",
                "elf_x86_64",
                "-nostdlib",
                "-z",
                "noexecstack",
                "--no-warn-rwx-segments",
                "-T",
            ])
            .arg(src.join(linker_script))
            .arg("-o")
            .arg(&partial)
            .args(&objs),
    );
    std::fs::rename(&partial, &out).unwrap();
    out
}

/// Build a PVH guest: 32-bit code (PVH enters in protected mode) in an ELF64 container
/// carrying the Xen PHYS32_ENTRY note, as Linux's vmlinux is.
pub fn pvh_guest(name: &str, sources: &[&str], linker_script: &str) -> PathBuf {
    let elf32 = multiboot_guest(&format!("{name}-elf32"), sources, linker_script);
    let out = out_dir().join(name);
    run_tool(
        Command::new("objcopy")
            .args(["-I", "elf32-i386", "-O", "elf64-x86-64"])
            .arg(&elf32)
            .arg(&out),
    );
    out
}

/// FNV-1a, the hash the test guests print (tests/guests/guest.h).
pub fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(2166136261u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(16777619)
    })
}

pub struct Run {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Run `vessel` with `args`; kill it and fail the test if it has not exited after `timeout`.
pub fn vessel(args: &[&str], timeout: Duration) -> Run {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vessel");
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "vessel {args:?} hung for {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        status: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

impl Run {
    /// Fail the test, showing what vessel printed, unless it exited with `code`.
    pub fn expect_status(&self, code: i32) -> &Self {
        assert_eq!(
            self.status,
            Some(code),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Fail the test unless the guest printed `text`.
    pub fn expect_stdout(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "want {text:?} in stdout:\n{}",
            self.stdout
        );
        self
    }
}

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`wait_for`] waits for a guest to get somewhere: generous, because test guests
/// run their ring-0 code through KVM's emulator on nested hosts (kvm_pvm), at speeds that
/// differ severalfold between machines of the same kind (a 40-step counter took 40 s on one
/// where it had taken under 30 s on another). Only a failing test waits this long.
pub const GUEST_PROGRESS: Duration = Duration::from_secs(180);

/// Poll `f` until it holds; fail the test after [`GUEST_PROGRESS`] saying what was awaited.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < GUEST_PROGRESS,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The numbers of a counting guest's `count=N` lines (`count=N ap=M` from the 2-vCPU one),
/// in order.
pub fn counts(serial: &str) -> Vec<u64> {
    serial
        .lines()
        .filter_map(|l| l.strip_prefix("count="))
        .filter_map(|rest| rest.split(' ').next()?.trim().parse().ok())
        .collect()
}

/// The counting guest's serial output before a move and after it: one count 1..=`steps`
/// without a restart, and its memory pattern found intact at the end (`memory=ok`).
pub fn counted_on_across_a_move(before: &str, after: &str, steps: u64) {
    assert!(!after.contains("guest up"), "the guest restarted: {after}");
    assert_eq!(
        counts(&format!("{before}{after}")),
        (1..=steps).collect::<Vec<_>>(),
        "here: {before}\nthere: {after}"
    );
    assert!(after.contains("memory=ok"), "{after}");
}
