//! `vessel migrate --copy-storage` between two state directories, as between two hosts
//! without shared storage: a counting guest writes sector N of its raw virtio-blk disk at
//! every step while its disks stream to the receiver's own images (`vessel start NAME
//! --incoming URL --copy-storage`), a raw one and a qcow2 one. The guest counts on there
//! and reads back every sector it wrote; afterwards the receiver's images hold what the
//! guest wrote on both sides and everything the source's images held before.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::state_dir::TestState as State;
use common::{counts, multiboot_guest, out_dir, wait_for};

const STEPS: u64 = 30;
const SECTOR: usize = 512;
const DISK_BYTES: usize = 4 << 20;

fn serial(st: &State) -> String {
    std::fs::read_to_string(st.0.join("mover").join("serial.log")).unwrap_or_default()
}

fn listed(st: &State) -> serde_json::Value {
    serde_json::from_str(&st.ok(&["inspect", "mover", "--json"])).unwrap()
}

fn qemu_img(args: &[&str]) -> std::process::Output {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The VM `mover` counting `STEPS` steps on its `raw` disk (the guest uses the first),
/// with `qcow2` as a second disk, written to `file`.
fn definition(file: &str, raw: &Path, qcow2: &Path) -> PathBuf {
    let kernel = multiboot_guest(
        "counter_blk",
        &["multiboot_header.S", "counter_blk_guest.c"],
        "multiboot.ld",
    );
    let file = out_dir().join(file);
    std::fs::write(
        &file,
        format!(
            "name = \"mover\"\ncpus = 1\nmemory = \"64M\"\n\n[boot]\nkernel = {kernel:?}\n\
             cmdline = \"steps={STEPS} delay=100000\"\n\n\
             [[disk]]\npath = {raw:?}\nformat = \"raw\"\n\n\
             [[disk]]\npath = {qcow2:?}\nformat = \"qcow2\"\n"
        ),
    )
    .unwrap();
    file
}

/// `len` bytes from /dev/urandom.
fn random(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut data)
        .unwrap();
    data
}

/// Whether sector `n` of `image` is the guest's: every 32-bit word is `n`.
fn guest_sector(image: &[u8], n: usize) -> bool {
    image[n * SECTOR..(n + 1) * SECTOR]
        .chunks(4)
        .all(|w| u32::from_le_bytes(w.try_into().unwrap()) == n as u32)
}

#[test]
fn copy_storage_moves_raw_and_qcow2_disks_with_what_the_guest_writes_meanwhile() {
    let here = State::new("copy-storage-source");
    let there = State::new("copy-storage-receiver");
    let dir = out_dir().join("copy-storage");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let original = random(DISK_BYTES);
    let (src_raw, src_qcow2) = (dir.join("src.raw"), dir.join("src.qcow2"));
    let (dst_raw, dst_qcow2) = (dir.join("dst.raw"), dir.join("dst.qcow2"));
    std::fs::write(&src_raw, &original).unwrap();
    let second = dir.join("second.raw");
    std::fs::write(&second, random(DISK_BYTES)).unwrap();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &p(&second),
        &p(&src_qcow2),
    ]);
    // The receiver's images: the right sizes, nothing in them.
    std::fs::write(&dst_raw, vec![0u8; DISK_BYTES]).unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", &p(&dst_qcow2), "4M"]);
    let source = definition("copy-storage-src.vm.toml", &src_raw, &src_qcow2);
    let target = definition("copy-storage-dst.vm.toml", &dst_raw, &dst_qcow2);
    here.ok(&["create", "mover", "--from", source.to_str().unwrap()]);
    there.ok(&["create", "mover", "--from", target.to_str().unwrap()]);
    here.ok(&["start", "mover"]);
    wait_for("the guest to count to 3", || {
        counts(&serial(&here)).len() >= 3
    });

    let socket = dir.join("incoming.sock");
    let url = format!("unix:{}", socket.display());
    there.ok(&["start", "mover", "--incoming", &url, "--copy-storage"]);
    // A slow link: the disks' first pass takes about two seconds, the guest writes meanwhile.
    let run = here.vessel(&[
        "migrate",
        "mover",
        "--to",
        &url,
        "--copy-storage",
        "--bandwidth-mib-s",
        "4",
    ]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    eprintln!("{}", run.stderr);
    // Both disks' data went (8 MiB: random, nothing to skip as zeroes).
    let sent = run
        .stderr
        .rsplit("; disks ")
        .next()
        .and_then(|tail| tail.split(" MiB sent").next())
        .and_then(|mib| mib.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no disk progress: {}", run.stderr));
    assert!(sent >= 8.0, "{}", run.stderr);
    wait_for("the guest to finish there", || {
        listed(&there)["state"] == "stopped"
    });
    let (before, after) = (serial(&here), serial(&there));
    assert!(!after.contains("guest up"), "the guest restarted: {after}");
    assert!(after.contains("disk verified"), "{after}");
    assert_eq!(
        counts(&format!("{before}{after}")),
        (1..=STEPS).collect::<Vec<_>>(),
        "here: {before}\nthere: {after}"
    );
    let left = listed(&here);
    assert!(
        left["last_exit"].as_str().unwrap().contains("migrated"),
        "{left}"
    );

    // The raw disk there: the guest's sectors (from both sides), the rest as it was here.
    let moved = std::fs::read(&dst_raw).unwrap();
    assert_eq!(moved.len(), DISK_BYTES);
    for n in 1..=STEPS as usize {
        assert!(guest_sector(&moved, n), "sector {n} is not the guest's");
    }
    let untouched = (STEPS as usize + 1) * SECTOR;
    assert!(moved[..SECTOR] == original[..SECTOR], "sector 0 differs");
    assert!(
        moved[untouched..] == original[untouched..],
        "what the guest did not write differs from the source's image"
    );
    // The qcow2 disk there: the same content as the source's (qemu-img reads both).
    qemu_img(&["compare", "-q", &p(&src_qcow2), &p(&dst_qcow2)]);
}
