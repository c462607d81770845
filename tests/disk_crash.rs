//! Crash safety: `vessel disk stress` is SIGKILLed at random moments during heavy random
//! writes; after each kill the reopened image must pass `qemu-img check` and hold every
//! write that a completed flush covered.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use block::workload::Workload;
use block::OpenOptions;

const VESSEL: &str = env!("CARGO_BIN_EXE_vessel");
const OPS_PER_FLUSH: u64 = 16;
const MAX_LEN: u64 = 131072;

fn qemu_check_code(path: &Path) -> (Option<i32>, String) {
    let out = Command::new("qemu-img")
        .args(["check", path.to_str().unwrap()])
        .output()
        .expect("qemu-img");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn read_image(path: &Path) -> Vec<u8> {
    let mut img = block::open(
        path,
        &OpenOptions {
            read_only: true,
            format: None,
            allow_external_backing: false,
        },
    )
    .unwrap();
    let mut buf = vec![0u8; img.size() as usize];
    img.read_at(&mut buf, 0).unwrap();
    buf
}

/// Kill the writer `rounds` times; verify after each kill.
fn crash_rounds(cluster_size: &str, size: &str, rounds: u64, seed0: u64) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("crash.qcow2");
    let ok = Command::new(VESSEL)
        .args([
            "disk",
            "create",
            img.to_str().unwrap(),
            "-f",
            "qcow2",
            "--size",
            size,
        ])
        .args(["--cluster-size", cluster_size])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut baseline = read_image(&img);
    let mut x = seed0;
    for round in 0..rounds {
        let seed = seed0 * 1000 + round;
        let log = dir.path().join(format!("log{round}"));
        let mut child = Command::new(VESSEL)
            .args([
                "disk",
                "stress",
                img.to_str().unwrap(),
                "--seed",
                &seed.to_string(),
            ])
            .args(["--log", log.to_str().unwrap()])
            .args(["--ops-per-flush", &OPS_PER_FLUSH.to_string()])
            .args(["--max-len", &MAX_LEN.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(150 + x % 600));
        // SAFETY: kill only sends a signal to the child we spawned.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        assert!(
            status.code().is_none(),
            "writer exited by itself: {status:?}"
        );

        // Without repair: no corruption (leaks are allowed).
        let (code, out) = qemu_check_code(&img);
        assert!(matches!(code, Some(0) | Some(3)), "round {round}: {out}");
        // Reopen read-write (repairs leaks of an unclean shutdown), then check clean.
        drop(block::open(&img, &OpenOptions::default()).unwrap());
        let (code, out) = qemu_check_code(&img);
        assert_eq!(code, Some(0), "round {round} after reopen: {out}");

        let flushed: Option<u64> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .next_back();
        let w = Workload {
            seed,
            size: baseline.len() as u64,
            max_len: MAX_LEN,
        };
        let mut model = baseline.clone();
        let first_uncertain = flushed.map_or(0, |k| k + 1);
        for i in 0..first_uncertain {
            w.apply(i, &mut model);
        }
        // Operations after the last recorded flush may or may not have landed (a flush
        // can complete just before its log line is written, so allow two batches).
        let mut uncertain = vec![false; model.len()];
        for i in first_uncertain..first_uncertain + 2 * OPS_PER_FLUSH {
            let (off, len) = w.op(i).range();
            uncertain[off as usize..(off + len) as usize].fill(true);
        }
        let got = read_image(&img);
        let bad = (0..model.len()).find(|&b| !uncertain[b] && got[b] != model[b]);
        assert!(
            bad.is_none(),
            "round {round}: byte {:?} lost (flushed through op {flushed:?})",
            bad
        );
        baseline = got;
    }
}

#[test]
fn sigkill_during_random_writes_64k_clusters() {
    crash_rounds("64K", "64M", 12, 1);
}

#[test]
fn sigkill_during_random_writes_512b_clusters() {
    // Small clusters: refcount blocks and the refcount table grow during the run.
    crash_rounds("512B", "16M", 8, 2);
}
