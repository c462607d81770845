//! virtio-blk through vessel's PCI platform on KVM: a test guest enumerates PCI, drives the
//! device the way a driver does (polling) and reports what it read and wrote.

mod common;

use common::{fnv1a, multiboot_guest, out_dir, vessel, TIMEOUT};

fn guest() -> std::path::PathBuf {
    multiboot_guest(
        "virtio_blk",
        &["multiboot_header.S", "virtio_blk_guest.c"],
        "multiboot.ld",
    )
}

/// Boot the virtio-blk test guest with `disk` (a --disk value) and extra arguments.
fn run_guest(disk: &str, extra: &[&str]) -> common::Run {
    let kernel = guest();
    let mut args = vec!["run", "--kernel", kernel.to_str().unwrap(), "--disk", disk];
    args.extend_from_slice(extra);
    vessel(&args, TIMEOUT)
}

fn image(name: &str, sectors: usize) -> (std::path::PathBuf, Vec<u8>) {
    let path = out_dir().join(name);
    let data: Vec<u8> = (0..sectors * 512).map(|i| (i * 31 % 253) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

#[test]
fn guest_reads_writes_flushes_and_gets_the_id() {
    let (img, data) = image("vblk-rw.raw", 2048);
    let disk = format!("path={},id=test-serial-42", img.display());
    let r = run_guest(&disk, &["--memory", "64M"]);
    r.expect_status(0);
    r.expect_stdout("pci: slot 0 id 0x");
    r.expect_stdout("pci: slot 1 id 0x10421af4 class 0x18000");
    r.expect_stdout("virtio-blk: capacity 2048 sectors\n");
    let want = format!("virtio-blk: sector 0 fnv1a={:#x}\n", fnv1a(&data[..512]));
    assert!(r.stdout.contains(&want), "want {want:?}: {}", r.stdout);
    r.expect_stdout("virtio-blk: write sector 1 status 0\n");
    r.expect_stdout("virtio-blk: flush status 0\n");
    r.expect_stdout("virtio-blk: id test-serial-42\n");
    // VIRTIO_BLK_S_IOERR for a sector past the end.
    r.expect_stdout("virtio-blk: past-end read status 1\n");
    // A completion on a masked vector is held pending; unmasking sends it through the
    // vector's irqfd and GSI route to the local APIC.
    assert!(
        r.stdout
            .contains("virtio-blk: msi-x masked pending=1 delivered=0\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("virtio-blk: msi-x unmasked pending=0 delivered=1\n"),
        "{}",
        r.stdout
    );
    let after = std::fs::read(&img).unwrap();
    let sector1: Vec<u8> = (0..512u32).map(|i| (0x5a ^ i) as u8).collect();
    assert_eq!(&after[512..1024], &sector1[..]);
    assert_eq!(&after[..512], &data[..512]);
    assert_eq!(&after[1024..], &data[1024..]);
}

#[test]
fn read_only_disk_refuses_the_write() {
    let (img, data) = image("vblk-ro.raw", 64);
    let disk = format!("path={},readonly=on", img.display());
    let r = run_guest(&disk, &[]);
    r.expect_status(0);
    r.expect_stdout("virtio-blk: id vessel-disk0\n");
    assert!(
        !r.stdout.contains("write sector 1 status 0\n"),
        "{}",
        r.stdout
    );
    assert_eq!(std::fs::read(&img).unwrap(), data);
}

#[test]
fn qcow2_disk_reads_like_its_raw_content() {
    let (raw, data) = image("vblk-src.raw", 128);
    let qcow = out_dir().join("vblk.qcow2");
    let _ = std::fs::remove_file(&qcow);
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .status()
        .unwrap();
    assert!(st.success());
    let disk = format!("path={}", qcow.display());
    let r = run_guest(&disk, &[]);
    r.expect_status(0);
    assert!(
        r.stdout.contains(&format!(
            "virtio-blk: sector 0 fnv1a={:#x}\n",
            fnv1a(&data[..512])
        )),
        "{}",
        r.stdout
    );
    let out = std::process::Command::new("qemu-img")
        .args(["check"])
        .arg(&qcow)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn disk_size_not_a_multiple_of_512_is_rejected() {
    let path = out_dir().join("vblk-odd.raw");
    std::fs::write(&path, vec![0u8; 1000]).unwrap();
    let disk = format!("path={},format=raw", path.display());
    let r = run_guest(&disk, &[]);
    assert_eq!(r.status, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("not a multiple of 512"), "{}", r.stderr);
}

#[test]
fn without_msix_completions_raise_intx_through_the_ioapic() {
    let (img, _) = image("vblk-intx.raw", 64);
    let disk = format!("path={}", img.display());
    let r = run_guest(&disk, &["--cmdline", "intx"]);
    r.expect_status(0);
    // Slot 1, pin A: GSI 17 as the DSDT's _PRT says; reading ISR acknowledges it.
    assert!(
        r.stdout
            .contains("virtio-blk: intx line=17 delivered=1 isr=1 isr-after-read=0\n"),
        "{}",
        r.stdout
    );
    r.expect_stdout("virtio-blk: flush status 0\n");
}

/// `--disk …,rate=1M`: the guest reads a 4 MiB disk as fast as it can, and the run cannot
/// be faster than the budget allows (only a lower bound, with generous slack: the run
/// also boots the guest, and a loaded host only makes it slower).
#[test]
fn a_rate_limited_disk_reads_no_faster_than_its_budget() {
    const SIZE: usize = 4 << 20;
    let (img, _) = image("vblk-rate.raw", SIZE / 512);
    let disk = format!("path={},rate=1M", img.display());
    let r = run_guest(&disk, &["--memory", "64M", "--cmdline", "readall"]);
    r.expect_status(0);
    r.expect_stdout(&format!("virtio-blk: read {SIZE} bytes\n"));
    // 4 MiB at 1 MiB/s, less the bucket's tenth of a second: 3.9 s; allow 3 s.
    assert!(
        r.elapsed >= std::time::Duration::from_secs(3),
        "read 4 MiB through a 1 MiB/s limit in {:?}",
        r.elapsed
    );
}
