//! `vessel vhost-user-blk` driven by a real Linux virtio-blk driver: the stock Debian cloud
//! kernel under QEMU TCG (tests/common/tcg.rs) runs tests/guests/tcg/blk-*.sh against a
//! disk that vessel serves over vhost-user, and the host checks the image afterwards.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::tcg::{self, Qemu, Served};

const DISK_MIB: u64 = 256;

/// An empty image of `mib` MiB in `format` (raw: a sparse file; others: qemu-img create,
/// an implementation independent of vessel's).
fn create_image(dir: &Path, format: &str, mib: u64) -> PathBuf {
    let path = dir.join(format!("disk.{format}"));
    if format == "raw" {
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(mib << 20).unwrap();
    } else {
        tcg::require_tool("qemu-img", "qemu-utils");
        tcg::run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", format])
                .arg(&path)
                .arg(format!("{mib}M")),
        );
    }
    path
}

/// The image's contents as a raw file (qemu-img convert for the other formats).
fn as_raw(image: &Path, format: &str) -> PathBuf {
    if format == "raw" {
        return image.to_owned();
    }
    let raw = image.with_extension("converted.raw");
    tcg::run(
        Command::new("qemu-img")
            .args(["convert", "-f", format, "-O", "raw"])
            .arg(image)
            .arg(&raw),
    );
    raw
}

fn qemu_img_check(image: &Path) {
    tcg::run(Command::new("qemu-img").args(["check", "-q"]).arg(image));
}

/// mkfs.ext4, 64 MiB of random data into /f, sync, remount, sha256 in the guest; then the
/// host dumps /f from the image with debugfs and compares.
fn ext4_roundtrip(format: &str) {
    let Some(guest) = tcg::guest() else { return };
    tcg::require_tool("debugfs", "e2fsprogs");
    let dir = tempfile::tempdir().unwrap();
    let image = create_image(dir.path(), format, DISK_MIB);
    let mut disk = Served::blk(&dir.path().join("blk.sock"), &image, format, false);

    let run = Qemu::boot(guest, "blk-fs", &[], &disk.qemu_args).finish();
    run.expect_pass(&disk);
    assert_eq!(run.result("size_sectors"), (DISK_MIB << 11).to_string());
    assert_eq!(run.result("ro"), "0");
    println!(
        "TCG-bound guest dd on {format} through {}: write {}, read {}",
        if tcg::reference_mode() {
            "QEMU's virtio-blk"
        } else {
            "vessel vhost-user-blk"
        },
        run.result("dd_write"),
        run.result("dd_read")
    );
    disk.stop();

    if format == "qcow2" {
        qemu_img_check(&image);
    }
    let dumped = dir.path().join("f.dumped");
    let raw = as_raw(&image, format);
    tcg::run(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump /f {}", dumped.display()))
            .arg(&raw),
    );
    assert_eq!(
        std::fs::metadata(&dumped).map(|m| m.len()).unwrap_or(0),
        64 << 20,
        "debugfs dumped no 64 MiB /f from the image"
    );
    assert_eq!(
        tcg::sha256_file(&dumped),
        run.result("sha256_remount"),
        "the file on the host's image differs from what the guest wrote"
    );
}

#[test]
fn raw_disk_ext4_file_matches_on_the_host() {
    ext4_roundtrip("raw");
}

#[test]
fn qcow2_disk_ext4_file_matches_on_the_host() {
    ext4_roundtrip("qcow2");
}

#[test]
fn vdi_disk_ext4_file_matches_on_the_host() {
    ext4_roundtrip("vdi");
}

#[test]
fn readonly_disk_reads_and_refuses_writes() {
    let Some(guest) = tcg::guest() else { return };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ro.raw");
    let content: Vec<u8> = (0u32..(16 << 20) / 4)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    std::fs::write(&image, &content).unwrap();
    let before = tcg::sha256_file(&image);
    let first_mib = dir.path().join("first-mib");
    std::fs::write(&first_mib, &content[..1 << 20]).unwrap();

    let mut disk = Served::blk(&dir.path().join("blk.sock"), &image, "raw", true);
    let run = Qemu::boot(guest, "blk-ro", &[], &disk.qemu_args).finish();
    run.expect_pass(&disk);
    assert_eq!(run.result("ro"), "1");
    assert_eq!(run.result("size_sectors"), (16 << 11).to_string());
    assert_eq!(run.result("sha256_first_mib"), tcg::sha256_file(&first_mib));
    println!(
        "read-only write refused with: {}",
        run.result("write_refused")
    );
    disk.stop();
    assert_eq!(
        tcg::sha256_file(&image),
        before,
        "the read-only image changed"
    );
}

#[test]
fn backend_survives_qemu_killed_mid_io() {
    let Some(guest) = tcg::guest() else { return };
    let dir = tempfile::tempdir().unwrap();
    let image = create_image(dir.path(), "qcow2", 128);
    let mut disk = Served::blk(&dir.path().join("blk.sock"), &image, "qcow2", false);

    let mut victim = Qemu::boot(guest, "blk-hammer", &[], &disk.qemu_args);
    victim.wait_for("VESSEL-HAMMER-RUNNING", tcg::GUEST_TIMEOUT);
    // Let the writes and reads run a moment, then kill QEMU in the middle of them.
    std::thread::sleep(Duration::from_millis(1500));
    victim.kill();
    assert!(
        disk.is_running(),
        "vessel exited when QEMU was killed:\n{}",
        disk.log()
    );

    let run = Qemu::boot(guest, "blk-check", &[], &disk.qemu_args).finish();
    run.expect_pass(&disk);
    assert_eq!(run.result("size_sectors"), (128 << 11).to_string());
    disk.stop();
    qemu_img_check(&image);
}
