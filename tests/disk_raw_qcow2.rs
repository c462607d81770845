//! Interoperability of vessel's raw and qcow2 drivers with qemu-img / qemu-io, both ways.

use std::path::Path;
use std::process::{Command, Output};

use block::{DiskImage, OpenOptions};

const VESSEL: &str = env!("CARGO_BIN_EXE_vessel");

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
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

fn qemu_check(path: &Path) {
    ok("qemu-img", &["check", p(path)]);
}

fn open_ro(path: &Path) -> Box<dyn DiskImage> {
    block::open(
        path,
        &OpenOptions {
            read_only: true,
            format: None,
            allow_external_backing: false,
        },
    )
    .unwrap()
}

fn read_all(path: &Path) -> Vec<u8> {
    let mut img = open_ro(path);
    let mut buf = vec![0u8; img.size() as usize];
    img.read_at(&mut buf, 0).unwrap();
    buf
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn vessel_written_qcow2_passes_qemu_check_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("v.qcow2");
    let r = dir.path().join("ref.raw");
    ok(
        VESSEL,
        &[
            "disk",
            "create",
            p(&q),
            "--format",
            "qcow2",
            "--size",
            "32M",
        ],
    );
    ok(
        VESSEL,
        &["disk", "create", p(&r), "--format", "raw", "--size", "32M"],
    );
    {
        let mut qi = block::open(&q, &OpenOptions::default()).unwrap();
        let mut ri = block::open(&r, &OpenOptions::default()).unwrap();
        for i in 0..300u64 {
            let off = (i * 7919 * 4099) % (31 << 20);
            let len = 1 + ((i * 104729) % 200_000) as usize;
            let data = pattern(i, len);
            for img in [&mut qi, &mut ri] {
                if i % 11 == 0 {
                    img.write_zeroes(off, len as u64).unwrap();
                } else if i % 13 == 0 {
                    img.discard(off, len as u64).unwrap();
                } else {
                    img.write_at(&data, off).unwrap();
                }
            }
        }
        qi.flush().unwrap();
    }
    qemu_check(&q);
    let out = ok(
        "qemu-img",
        &["compare", "-f", "qcow2", "-F", "raw", p(&q), p(&r)],
    );
    assert!(out.contains("identical"), "{out}");
    let out = ok(VESSEL, &["disk", "check", p(&q)]);
    assert!(out.contains("No errors"), "{out}");
}

#[test]
fn qemu_written_images_read_back_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    for (name, fmt, opts) in [
        ("a.qcow2", "qcow2", "compat=1.1"),
        ("b.qcow2", "qcow2", "compat=0.10"),
        ("c.qcow2", "qcow2", "cluster_size=4096,refcount_bits=8"),
        ("d.raw", "raw", ""),
    ] {
        let img = dir.path().join(name);
        let mut args = vec!["create", "-q", "-f", fmt];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        args.extend([p(&img), "16M"]);
        ok("qemu-img", &args);
        ok(
            "qemu-io",
            &[
                "-f",
                fmt,
                "-c",
                "write -P 0xab 0 64k",
                "-c",
                "write -P 0xcd 1000k 300k",
                "-c",
                "write -z 1100k 64k",
                "-c",
                "write -P 0x17 15m 4097",
                p(&img),
            ],
        );
        let raw = dir.path().join(format!("{name}.ref"));
        ok(
            "qemu-img",
            &["convert", "-f", fmt, "-O", "raw", p(&img), p(&raw)],
        );
        assert_eq!(read_all(&img), std::fs::read(&raw).unwrap(), "{name}");
    }
}

#[test]
fn backing_chains_and_compressed_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    let mid = dir.path().join("mid.qcow2");
    let top = dir.path().join("top.qcow2");
    ok("qemu-img", &["create", "-q", "-f", "raw", p(&base), "8M"]);
    ok(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x11 0 8M", p(&base)],
    );
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            p(&mid),
        ],
    );
    ok(
        "qemu-io",
        &[
            "-c",
            "write -P 0x22 1M 1M",
            "-c",
            "write -z 3M 64k",
            p(&mid),
        ],
    );
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            p(&top),
        ],
    );
    ok("qemu-io", &["-c", "write -P 0x33 1536k 4k", p(&top)]);
    let flat = dir.path().join("flat.raw");
    ok("qemu-img", &["convert", "-O", "raw", p(&top), p(&flat)]);
    assert!(read_all(&top) == std::fs::read(&flat).unwrap());

    // vessel writes into a qemu-made chain; qemu reads it back.
    {
        let mut img = block::open(&top, &OpenOptions::default()).unwrap();
        img.write_at(&[0x44; 5000], 1_000_000).unwrap();
        img.flush().unwrap();
    }
    qemu_check(&top);
    let expect = {
        let mut v = std::fs::read(&flat).unwrap();
        v[1_000_000..1_005_000].fill(0x44);
        v
    };
    ok("qemu-img", &["convert", "-O", "raw", p(&top), p(&flat)]);
    assert!(std::fs::read(&flat).unwrap() == expect);

    // vessel-created qcow2 over a qemu qcow2.
    let vtop = dir.path().join("vtop.qcow2");
    ok(
        VESSEL,
        &["disk", "create", p(&vtop), "-f", "qcow2", "-b", "top.qcow2"],
    );
    let info = ok("qemu-img", &["info", "--backing-chain", p(&vtop)]);
    assert!(info.contains("base.raw"), "{info}");
    assert!(read_all(&vtop) == expect);
    let info = ok(VESSEL, &["disk", "info", "--json", p(&vtop)]);
    let json: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(json["backing-chain"].as_array().unwrap().len(), 3);

    // Compressed clusters.
    let comp = dir.path().join("comp.qcow2");
    ok(
        "qemu-img",
        &["convert", "-c", "-O", "qcow2", p(&top), p(&comp)],
    );
    assert!(read_all(&comp) == expect);
    // Overwrite parts of compressed clusters, check refcounts stay right.
    {
        let mut img = block::open(&comp, &OpenOptions::default()).unwrap();
        img.write_at(&[0x55; 100], 2_000_000).unwrap();
        img.write_zeroes(0, 65536).unwrap();
    }
    qemu_check(&comp);
}

#[test]
fn fresh_8g_qcow2_is_small_and_convert_keeps_holes() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("big.qcow2");
    ok(
        VESSEL,
        &["disk", "create", p(&q), "-f", "qcow2", "--size", "8G"],
    );
    let used = std::fs::metadata(&q).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        used.blocks() * 512 < 1 << 20,
        "{} bytes",
        used.blocks() * 512
    );
    qemu_check(&q);

    // Raw image, every other MiB data: 50 % holes.
    let r = dir.path().join("half.raw");
    ok(
        VESSEL,
        &["disk", "create", p(&r), "-f", "raw", "--size", "64M"],
    );
    {
        let mut img = block::open(&r, &OpenOptions::default()).unwrap();
        for i in (0..64).step_by(2) {
            img.write_at(&pattern(i, 1 << 20), i << 20).unwrap();
        }
    }
    let raw_used = std::fs::metadata(&r).unwrap().blocks() * 512;
    for (fmt, name) in [("qcow2", "half.qcow2"), ("raw", "half2.raw")] {
        let out = dir.path().join(name);
        ok(VESSEL, &["disk", "convert", p(&r), p(&out), "-O", fmt]);
        let used = std::fs::metadata(&out).unwrap().blocks() * 512;
        assert!(used < raw_used + (2 << 20), "{fmt}: {used} vs {raw_used}");
        assert!(used < 40 << 20, "{fmt}: {used}");
        ok("qemu-img", &["compare", p(&r), p(&out)]);
    }
    let back = dir.path().join("back.raw");
    ok(
        VESSEL,
        &[
            "disk",
            "convert",
            p(&dir.path().join("half.qcow2")),
            p(&back),
            "-O",
            "raw",
        ],
    );
    assert!(std::fs::metadata(&back).unwrap().blocks() * 512 < 40 << 20);
}

#[test]
fn resize_and_check_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("r.qcow2");
    ok(
        VESSEL,
        &[
            "disk",
            "create",
            p(&q),
            "-f",
            "qcow2",
            "--size",
            "1M",
            "--cluster-size",
            "512B",
        ],
    );
    ok(VESSEL, &["disk", "resize", p(&q), "1G"]);
    ok("qemu-io", &["-c", "write -P 0x66 1000M 1M", p(&q)]);
    qemu_check(&q);
    let shrink = run(VESSEL, &["disk", "resize", p(&q), "512M"]);
    assert_eq!(shrink.status.code(), Some(2));
    let info = ok("qemu-img", &["info", "--output=json", p(&q)]);
    assert!(info.contains("\"virtual-size\": 1073741824"), "{info}");
    let out = ok(VESSEL, &["disk", "check", "--json", p(&q)]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["corruptions"], 0);
}

#[test]
fn corrupt_and_truncated_images_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("c.qcow2");
    ok("qemu-img", &["create", "-q", "-f", "qcow2", p(&q), "16M"]);
    ok("qemu-io", &["-c", "write -P 0xab 0 1M", p(&q)]);
    let good = std::fs::read(&q).unwrap();

    // Truncated in the middle of the data: reads past the end are zero, check complains.
    let t = dir.path().join("trunc.qcow2");
    std::fs::write(&t, &good[..100]).unwrap();
    let out = run(VESSEL, &["disk", "info", p(&t)]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corrupt"),
        "{out:?}"
    );
    let out = run(VESSEL, &["disk", "check", p(&t)]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    // A refcount that is too low: corruption found by check (exit 3) and by qemu-img.
    let bad = dir.path().join("bad.qcow2");
    let mut bytes = good.clone();
    // Refcount block of a fresh qemu image is at cluster 2; zero the entry of cluster 5.
    let rb = 2 * 65536;
    bytes[rb + 2 * 5..rb + 2 * 5 + 2].fill(0);
    std::fs::write(&bad, &bytes).unwrap();
    let out = run(VESSEL, &["disk", "check", p(&bad)]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_ne!(run("qemu-img", &["check", p(&bad)]).status.code(), Some(0));

    // Unknown incompatible feature bit.
    let feat = dir.path().join("feat.qcow2");
    let mut bytes = good.clone();
    bytes[72 + 7] |= 0x80; // bit 7
    std::fs::write(&feat, &bytes).unwrap();
    let out = run(VESSEL, &["disk", "info", p(&feat)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("incompatible features bit 7"));

    // Bad arguments.
    assert_eq!(
        run(
            VESSEL,
            &["disk", "create", "x", "-f", "nope", "--size", "1G"]
        )
        .status
        .code(),
        Some(2)
    );
    assert_eq!(
        run(
            VESSEL,
            &["disk", "create", p(&q), "-f", "qcow2", "--size", "1G"]
        )
        .status
        .code(),
        Some(2)
    );
    assert_eq!(
        run(VESSEL, &["disk", "info", "/nonexistent/x"])
            .status
            .code(),
        Some(2)
    );

    // Features vessel does not implement are refused by name.
    for (opt, what) in [
        ("extended_l2=on", "extended L2"),
        ("compression_type=zstd", "compression type"),
    ] {
        let f = dir.path().join("feature.qcow2");
        let _ = std::fs::remove_file(&f);
        let made = run(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "-o", opt, p(&f), "1M"],
        );
        if !made.status.success() {
            continue; // this qemu-img lacks the feature
        }
        let out = run(VESSEL, &["disk", "info", p(&f)]);
        assert_eq!(out.status.code(), Some(2), "{opt}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(what), "{opt}: {err}");
    }
}

#[test]
fn raw_images_info_check_and_detection() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("disk.qcow2"); // the name lies: content decides
    ok(
        VESSEL,
        &["disk", "create", p(&r), "-f", "raw", "--size", "4M"],
    );
    ok(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x42 1M 64k", p(&r)],
    );
    let info = ok(VESSEL, &["disk", "info", "--json", p(&r)]);
    let json: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(json["format"], "raw");
    assert_eq!(json["virtual-size"], 4 << 20);
    let out = ok(VESSEL, &["disk", "check", p(&r)]);
    assert!(out.contains("No errors"), "{out}");
    // The data extent is reported as allocated, the rest as holes.
    let mut img = open_ro(&r);
    let map = img.allocation(0, 4 << 20).unwrap();
    assert!(map
        .iter()
        .any(|e| e.state == block::Allocation::Data && e.offset <= 1 << 20));
    assert!(map.iter().any(|e| e.state == block::Allocation::Zero));
}

#[test]
fn vessel_writes_into_qemu_images_of_every_flavour() {
    let dir = tempfile::tempdir().unwrap();
    for (i, opts) in [
        "compat=0.10",
        "refcount_bits=1,cluster_size=512",
        "refcount_bits=64,cluster_size=4096",
        "refcount_bits=8,cluster_size=2M",
        "lazy_refcounts=on",
    ]
    .iter()
    .enumerate()
    {
        let q = dir.path().join(format!("f{i}.qcow2"));
        let r = dir.path().join(format!("f{i}.raw"));
        ok(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "-o", opts, p(&q), "24M"],
        );
        ok("qemu-io", &["-c", "write -P 0x21 100k 3M", p(&q)]);
        {
            let mut img = block::open(&q, &OpenOptions::default()).unwrap();
            for j in 0..40u64 {
                let off = (j * 611_953) % (23 << 20);
                img.write_at(&pattern(j, 70_001), off).unwrap();
            }
            img.discard(1 << 20, 1 << 20).unwrap();
            img.write_zeroes(5 << 20, 3 << 20).unwrap();
        }
        qemu_check(&q);
        ok("qemu-img", &["convert", "-O", "raw", p(&q), p(&r)]);
        assert!(read_all(&q) == std::fs::read(&r).unwrap(), "{opts}");
        let out = ok(VESSEL, &["disk", "check", p(&q)]);
        assert!(out.contains("No errors"), "{opts}: {out}");
        assert!(!out.contains("leaked"), "{opts}: {out}");
    }
}

#[test]
fn internal_snapshots_are_read_and_checked_but_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("snap.qcow2");
    ok("qemu-img", &["create", "-q", "-f", "qcow2", p(&q), "8M"]);
    ok("qemu-io", &["-c", "write -P 0x01 0 2M", p(&q)]);
    ok("qemu-img", &["snapshot", "-c", "first", p(&q)]);
    ok("qemu-io", &["-c", "write -P 0x02 1M 2M", p(&q)]);
    ok("qemu-img", &["snapshot", "-c", "second", p(&q)]);
    let r = dir.path().join("snap.raw");
    ok("qemu-img", &["convert", "-O", "raw", p(&q), p(&r)]);
    assert!(read_all(&q) == std::fs::read(&r).unwrap());
    // Refcounts shared with snapshots are accounted for: no leaks, no errors.
    let out = ok(VESSEL, &["disk", "check", p(&q)]);
    assert!(
        out.contains("No errors") && !out.contains("leaked"),
        "{out}"
    );
    let err = block::open(&q, &OpenOptions::default()).err().unwrap();
    assert!(err.to_string().contains("snapshots"), "{err}");
}

#[test]
fn odd_sizes_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("odd.qcow2");
    let size = 3 * 65536 + 1536; // not a whole number of clusters
    ok(
        VESSEL,
        &[
            "disk",
            "create",
            p(&q),
            "-f",
            "qcow2",
            "--size",
            &format!("{size}B"),
        ],
    );
    {
        let mut img = block::open(&q, &OpenOptions::default()).unwrap();
        img.write_at(&pattern(1, 2000), size - 2000).unwrap();
        assert!(img.write_at(&[1], size).is_err());
    }
    qemu_check(&q);
    let r = dir.path().join("odd.raw");
    ok("qemu-img", &["convert", "-O", "raw", p(&q), p(&r)]);
    let raw = std::fs::read(&r).unwrap();
    assert_eq!(raw.len() as u64, size);
    assert_eq!(&raw[size as usize - 2000..], &pattern(1, 2000)[..]);
    assert!(read_all(&q) == raw);
}
