//! Interoperability of vessel's VDI, VHD, VMDK and VHDX drivers with qemu-img / qemu-io,
//! both ways, through the `vessel disk` commands and the block crate's public API.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use block::{Allocation, DiskImage, Format, OpenOptions};

const VESSEL: &str = env!("CARGO_BIN_EXE_vessel");

/// (vessel name, qemu name)
const FORMATS: [(&str, &str); 4] = [
    ("vdi", "vdi"),
    ("vhd", "vpc"),
    ("vmdk", "vmdk"),
    ("vhdx", "vhdx"),
];

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vessel-it-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn open(path: &Path, read_only: bool) -> Box<dyn DiskImage> {
    block::open(
        path,
        &OpenOptions {
            read_only,
            format: None,
            allow_external_backing: false,
        },
    )
    .unwrap()
}

/// xorshift data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random writes (partial blocks, block-crossing) to `img` and the same to a raw
/// reference file; returns the reference content.
fn write_random(img: &mut dyn DiskImage, reference: &Path, seed: u64) -> Vec<u8> {
    let size = img.size();
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng(seed | 1);
    for _ in 0..60 {
        let max = if rng.below(3) == 0 { 3 << 20 } else { 50_000 };
        let len = 1 + rng.below(max);
        let off = rng.below(size - len);
        let buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        img.write_at(&buf, off).unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&buf);
    }
    img.flush().unwrap();
    std::fs::write(reference, &model).unwrap();
    model
}

fn qemu_raw(path: &Path, qemu_fmt: &str) -> Vec<u8> {
    let out = path.with_extension("qemu.raw");
    ok(
        "qemu-img",
        &["convert", "-f", qemu_fmt, "-O", "raw", p(path), p(&out)],
    );
    let data = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    data
}

#[test]
fn vessel_created_images_pass_qemu_check_and_compare() {
    for (fmt, qfmt) in FORMATS {
        for fixed in [false, true] {
            let dir = TempDir::new("create");
            let img_path = dir.join(&format!("a.{fmt}"));
            let mut args = vec!["disk", "create", "-f", fmt, "-s", "24M", p(&img_path)];
            if fixed {
                args.push("--fixed");
            }
            ok(VESSEL, &args);
            let reference = dir.join("ref.raw");
            let model = {
                let mut img = open(&img_path, false);
                assert_eq!(img.size(), 24 << 20, "{fmt}");
                write_random(img.as_mut(), &reference, 0x5eed + fixed as u64)
            };
            if qfmt != "vpc" {
                ok("qemu-img", &["check", "-f", qfmt, p(&img_path)]);
            }
            ok(
                "qemu-img",
                &[
                    "compare",
                    "-f",
                    qfmt,
                    "-F",
                    "raw",
                    p(&img_path),
                    p(&reference),
                ],
            );
            ok(VESSEL, &["disk", "check", p(&img_path)]);
            let info = ok("qemu-img", &["info", "-f", qfmt, p(&img_path)]);
            assert!(
                info.contains("(25165824 bytes)"),
                "{fmt}: qemu sees another size: {info}"
            );
            assert!(qemu_raw(&img_path, qfmt) == model, "{fmt} fixed={fixed}");
        }
    }
}

#[test]
fn qemu_created_images_read_byte_exact() {
    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        ("vdi", "vdi", None),
        ("vdi", "vdi", Some("static=on")),
        ("vhd", "vpc", None),
        ("vhd", "vpc", Some("subformat=fixed")),
        ("vmdk", "vmdk", Some("subformat=monolithicSparse")),
        ("vmdk", "vmdk", Some("subformat=monolithicFlat")),
        ("vmdk", "vmdk", Some("subformat=twoGbMaxExtentSparse")),
        ("vmdk", "vmdk", Some("subformat=twoGbMaxExtentFlat")),
        ("vhdx", "vhdx", None),
        ("vhdx", "vhdx", Some("subformat=fixed")),
    ];
    for (fmt, qfmt, opt) in cases {
        let dir = TempDir::new("qemu");
        let img_path = dir.join(&format!("q.{fmt}"));
        let mut args = vec!["create", "-q", "-f", qfmt];
        if let Some(o) = opt {
            args.extend(["-o", o]);
        }
        args.extend([p(&img_path), "10M"]);
        ok("qemu-img", &args);
        ok(
            "qemu-io",
            &[
                "-f",
                qfmt,
                "-c",
                "write -P 0xab 0 64k",
                "-c",
                "write -P 0x11 3M 100k",
                "-c",
                "write -P 0x5a 1536k 4k",
                "-c",
                "write -P 0xc3 9000k 1k",
                p(&img_path),
            ],
        );
        let expected = qemu_raw(&img_path, qfmt);
        // Through the CLI: convert to raw and compare.
        let out = dir.join("vessel.raw");
        ok(
            VESSEL,
            &["disk", "convert", "-O", "raw", p(&img_path), p(&out)],
        );
        assert!(
            std::fs::read(&out).unwrap() == expected,
            "{fmt} {opt:?}: vessel convert differs"
        );
        // Through the API, with an allocation map that covers every written byte.
        let mut img = open(&img_path, true);
        let mut data = vec![0u8; img.size() as usize];
        img.read_at(&mut data, 0).unwrap();
        assert!(data == expected, "{fmt} {opt:?}");
        for e in img.allocation(0, img.size()).unwrap() {
            if e.state == Allocation::Zero {
                let r = e.offset as usize..(e.offset + e.len) as usize;
                assert!(
                    expected[r].iter().all(|&b| b == 0),
                    "{fmt} {opt:?}: hole {e:?} has data"
                );
            }
        }
    }
}

#[test]
fn stream_optimized_vmdk_reads_byte_exact() {
    let dir = TempDir::new("stream");
    let raw = dir.join("src.raw");
    let mut rng = Rng(99);
    let mut data = vec![0u8; 12 << 20];
    for chunk in data[(5 << 20)..(7 << 20)].chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    data[..65536].fill(0x42);
    std::fs::write(&raw, &data).unwrap();
    let st = dir.join("st.vmdk");
    ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            p(&raw),
            p(&st),
        ],
    );
    let out = dir.join("back.raw");
    ok(VESSEL, &["disk", "convert", "-O", "raw", p(&st), p(&out)]);
    assert!(std::fs::read(&out).unwrap() == data);
}

#[test]
fn convert_keeps_holes_and_content() {
    let dir = TempDir::new("holes");
    let raw = dir.join("src.raw");
    let size = 64u64 << 20;
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x77 0 1M",
            "-c",
            "write -P 0x88 40M 2M",
            p(&raw),
        ],
    );
    for (fmt, qfmt) in FORMATS {
        let dst = dir.join(&format!("c.{fmt}"));
        ok(VESSEL, &["disk", "convert", "-O", fmt, p(&raw), p(&dst)]);
        ok(
            "qemu-img",
            &["compare", "-f", qfmt, "-F", "raw", p(&dst), p(&raw)],
        );
        let img = open(&dst, true);
        let used = img.allocated_bytes().unwrap();
        assert!(
            used < 12 << 20,
            "{fmt}: {used} bytes used for 3 MiB of data"
        );
    }
}

#[test]
fn fresh_8g_dynamic_images_are_small() {
    for (fmt, qfmt) in FORMATS {
        let dir = TempDir::new("8g");
        let img_path = dir.join(&format!("big.{fmt}"));
        ok(
            VESSEL,
            &["disk", "create", "-f", fmt, "-s", "8G", p(&img_path)],
        );
        let img = open(&img_path, true);
        assert_eq!(img.size(), 8 << 30);
        assert!(
            img.allocated_bytes().unwrap() < 1 << 20,
            "{fmt}: {}",
            img.allocated_bytes().unwrap()
        );
        let info = ok("qemu-img", &["info", "-f", qfmt, p(&img_path)]);
        assert!(info.contains("(8589934592 bytes)"), "{fmt}: {info}");
    }
}

#[test]
fn differencing_chains_read_through_parents() {
    for (fmt, qfmt) in [("vhd", "vpc"), ("vmdk", "vmdk"), ("vhdx", "vhdx")] {
        let dir = TempDir::new("chain");
        let base = dir.join(&format!("base.{fmt}"));
        let child = dir.join(&format!("child.{fmt}"));
        ok(
            VESSEL,
            &["disk", "create", "-f", fmt, "-s", "16M", p(&base)],
        );
        let reference = dir.join("ref.raw");
        let mut model = write_random(open(&base, false).as_mut(), &reference, 7);
        ok(
            VESSEL,
            &[
                "disk",
                "create",
                "-f",
                fmt,
                "-b",
                &format!("base.{fmt}"),
                p(&child),
            ],
        );
        {
            let mut c = open(&child, false);
            assert!(c.backing().is_some(), "{fmt}");
            c.write_at(&[0xee; 10_000], 5 << 20).unwrap();
            model[5 << 20..(5 << 20) + 10_000].fill(0xee);
        }
        let out = dir.join("flat.raw");
        ok(
            VESSEL,
            &["disk", "convert", "-O", "raw", p(&child), p(&out)],
        );
        assert!(
            std::fs::read(&out).unwrap() == model,
            "{fmt}: chain reads differently"
        );
        if qfmt == "vmdk" {
            // qemu follows VMDK parents too.
            assert!(
                qemu_raw(&child, qfmt) == model,
                "qemu reads the VMDK chain differently"
            );
        }
        let info = ok(VESSEL, &["disk", "info", p(&child)]);
        assert!(
            info.contains("base"),
            "{fmt}: info does not show the parent: {info}"
        );
    }
}

#[test]
fn corrupt_headers_give_clear_errors() {
    for (fmt, _) in FORMATS {
        let dir = TempDir::new("corrupt");
        let img_path = dir.join(&format!("x.{fmt}"));
        ok(
            VESSEL,
            &["disk", "create", "-f", fmt, "-s", "4M", p(&img_path)],
        );
        let mut bytes = std::fs::read(&img_path).unwrap();
        // Damage the structure the driver reads first.
        let at = match fmt {
            "vdi" => 0x180,
            "vhd" => bytes.len() - 512 + 48,
            "vmdk" => 20,
            _ => (64 << 10) + 8,
        };
        bytes[at] ^= 0x5a;
        if fmt == "vhd" {
            bytes[48] ^= 0x5a; // the footer copy too
        }
        if fmt == "vhdx" {
            bytes[(128 << 10) + 8] ^= 0x5a;
        }
        std::fs::write(&img_path, &bytes).unwrap();
        let format: Format = fmt.parse().unwrap();
        match block::open(
            &img_path,
            &OpenOptions {
                read_only: true,
                format: Some(format),
                allow_external_backing: false,
            },
        ) {
            Err(block::Error::Corrupt { reason, .. }) => assert!(!reason.is_empty()),
            Err(e) => panic!("{fmt}: expected a corrupt-image error, got {e}"),
            Ok(_) => panic!("{fmt}: damaged image opened"),
        }
    }
}

/// `vessel disk stress` is SIGKILLed at random moments during random writes, zeroing and
/// discards; after each kill the image must pass `qemu-img check` (leaks allowed, and
/// clean after a read-write reopen) and hold every write a completed flush covered.
#[test]
fn sigkill_during_random_writes_keeps_flushed_data() {
    use block::workload::Workload;
    use std::process::Stdio;
    use std::time::Duration;

    const OPS_PER_FLUSH: u64 = 16;
    const MAX_LEN: u64 = 131072;
    let mut x: u64 = 0x1234_5678;
    for (fmt, qfmt) in FORMATS {
        let dir = TempDir::new("crash");
        let img_path = dir.join(&format!("crash.{fmt}"));
        ok(
            VESSEL,
            &["disk", "create", "-f", fmt, "-s", "32M", p(&img_path)],
        );
        let read_image = |path: &Path| {
            let mut img = open(path, true);
            let mut buf = vec![0u8; img.size() as usize];
            img.read_at(&mut buf, 0).unwrap();
            buf
        };
        let mut baseline = read_image(&img_path);
        let mut flushed_ops = 0;
        for round in 0..5u64 {
            let seed = 77_000 + round;
            let log = dir.join(&format!("log{round}"));
            let mut child = Command::new(VESSEL)
                .args(["disk", "stress", p(&img_path), "--seed", &seed.to_string()])
                .args([
                    "--log",
                    p(&log),
                    "--ops-per-flush",
                    &OPS_PER_FLUSH.to_string(),
                ])
                .args(["--max-len", &MAX_LEN.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            std::thread::sleep(Duration::from_millis(150 + x % 600));
            child.kill().unwrap();
            let status = child.wait().unwrap();
            assert!(
                status.code().is_none(),
                "{fmt}: writer exited by itself: {status:?}"
            );

            if qfmt != "vpc" {
                let out = Command::new("qemu-img")
                    .args(["check", "-f", qfmt, p(&img_path)])
                    .output()
                    .unwrap();
                assert!(
                    matches!(out.status.code(), Some(0) | Some(3)),
                    "{fmt} round {round}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                drop(open(&img_path, false));
                ok("qemu-img", &["check", "-f", qfmt, p(&img_path)]);
            }
            let flushed: Option<u64> = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .next_back();
            flushed_ops += flushed.map_or(0, |k| k + 1);
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
            let mut uncertain = vec![false; model.len()];
            for i in first_uncertain..first_uncertain + 2 * OPS_PER_FLUSH {
                let (off, len) = w.op(i).range();
                uncertain[off as usize..(off + len) as usize].fill(true);
            }
            let got = read_image(&img_path);
            let bad = (0..model.len()).find(|&b| !uncertain[b] && got[b] != model[b]);
            assert!(
                bad.is_none(),
                "{fmt} round {round}: byte {bad:?} lost (flushed through op {flushed:?})"
            );
            baseline = got;
        }
        assert!(flushed_ops > 0, "{fmt}: the writer never completed a flush");
        eprintln!("{fmt}: {flushed_ops} flushed operations over 5 kills");
    }
}
