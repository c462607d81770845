//! Real disk images built with host tools (sgdisk, sfdisk, mkfs.ext4, qemu-img): GPT and
//! MBR layouts, grub.cfg and symlink-only roots, a separate /boot, unsupported file system
//! magic, truncated images and corrupt GPT headers — through every block-layer format.

mod common;

use bootdisk::probe::FsKind;
use bootdisk::{find_boot, find_boot_with, BootSource, Error, Limits, LIMITS};
use common::*;

const DEBIAN_CFG: &str = include_str!("data/debian12-genericcloud.grub.cfg");
const ROOT_UUID: &str = "5c7a7bf5-1b9a-4a3e-a2c4-2a4e1f1d3e10";
const PARTUUID: &str = "8e3b5c1a-2f4d-4b6e-9a7c-1d2e3f4a5b6c";
const KVER: &str = "6.1.0-28-cloud-amd64";
const TOOLS: &[&str] = &["sgdisk", "mkfs.ext4", "truncate", "qemu-img"];

/// A Debian-like root: grub.cfg, two kernels, symlinks, /etc.
fn debian_root() -> Tree {
    Tree::default()
        .file("/boot/grub/grub.cfg", DEBIAN_CFG)
        .file(&format!("/boot/vmlinuz-{KVER}"), blob("KERNEL28", 300_000))
        .file(
            &format!("/boot/initrd.img-{KVER}"),
            blob("INITRD28", 700_000),
        )
        .file("/boot/vmlinuz-6.1.0-27-cloud-amd64", blob("KERNEL27", 1000))
        .link("/vmlinuz", &format!("boot/vmlinuz-{KVER}"))
        .link("/initrd.img", &format!("boot/initrd.img-{KVER}"))
        .file("/etc/hostname", "debian\n")
}

/// The Debian root on a 40 MiB GPT disk, partition 1 (32 MiB).
fn debian_gpt(work: &std::path::Path) -> std::path::PathBuf {
    let fs = mkfs(work, "root", &debian_root(), ROOT_UUID, "root", 32);
    let disk = gpt_disk(work, 40, &[(32, PARTUUID)]);
    place(&disk, P1, &fs);
    disk
}

#[test]
fn gpt_grub_default_entry_in_every_format() {
    if !have(TOOLS) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let raw = debian_gpt(work.path());
    for format in ["raw", "qcow2", "vmdk", "vdi", "vhdx"] {
        let image = if format == "raw" {
            raw.clone()
        } else {
            convert(&raw, format)
        };
        let mut disk = open(&image);
        let boot = find_boot(&mut disk).unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(boot.kernel, blob("KERNEL28", 300_000), "{format}");
        assert_eq!(boot.initrd, Some(blob("INITRD28", 700_000)), "{format}");
        assert_eq!(
            boot.source,
            BootSource::GrubEntry {
                title: "Debian GNU/Linux".into(),
                config: "/boot/grub/grub.cfg".into()
            }
        );
        assert!(boot
            .cmdline
            .starts_with(&format!("root=PARTUUID={PARTUUID} ro console=tty0")));
        assert_eq!(boot.root_partition.index, 1);
        assert_eq!(boot.root_partition.part_uuid.as_deref(), Some(PARTUUID));
        assert_eq!(boot.root_partition.fs_uuid.as_deref(), Some(ROOT_UUID));
        assert_eq!(boot.root_partition.start, P1);
        assert_eq!(disk.size(), 40 * MIB, "the disk is handed back");
    }
}

#[test]
fn extract_writes_the_files() {
    if !have(TOOLS) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let raw = debian_gpt(work.path());
    let qcow2 = convert(&raw, "qcow2");
    let out = work.path().join("cache");
    let got = bootdisk::extract(&qcow2, &out).unwrap();
    assert_eq!(
        std::fs::read(&got.kernel).unwrap(),
        blob("KERNEL28", 300_000)
    );
    assert_eq!(
        std::fs::read(got.initrd.unwrap()).unwrap(),
        blob("INITRD28", 700_000)
    );
    let cmdline = std::fs::read_to_string(out.join("cmdline")).unwrap();
    assert_eq!(cmdline.trim_end(), got.cmdline);
}

#[test]
fn mbr_symlinks_only() {
    if !have(&["sfdisk", "mkfs.ext4", "truncate", "qemu-img"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = Tree::default()
        .file("/boot/vmlinuz-6.8.0-49-generic", blob("K68", 5000))
        .file("/boot/initrd.img-6.8.0-49-generic", blob("I68", 7000))
        .link("/vmlinuz", "boot/vmlinuz-6.8.0-49-generic")
        .link("/initrd.img", "/boot/initrd.img-6.8.0-49-generic")
        .dir("/etc");
    let uuid = "0b7d0e3c-3f4a-4e55-8f2a-7b1c9d0e1f23";
    let fs = mkfs(work.path(), "root", &tree, uuid, "cloudimg-rootfs", 16);
    let disk = mbr_disk(work.path(), 20, 16);
    place(&disk, P1, &fs);
    let mut d = open(&convert(&disk, "qcow2"));
    let boot = find_boot(&mut d).unwrap();
    assert_eq!(boot.source, BootSource::Symlinks);
    assert_eq!(boot.kernel, blob("K68", 5000));
    assert_eq!(boot.initrd, Some(blob("I68", 7000)));
    assert_eq!(boot.cmdline, format!("root=UUID={uuid} ro"));
    assert_eq!(
        boot.root_partition.part_uuid.as_deref(),
        Some("12345678-01")
    );
    assert_eq!(boot.kernel_path, "/boot/vmlinuz-6.8.0-49-generic");
}

#[test]
fn separate_boot_partition() {
    if !have(TOOLS) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root_uuid = "11111111-2222-4333-8444-555555555555";
    let cfg = format!(
        "set default=0\nmenuentry 'Ubuntu' {{\n\tsearch --no-floppy --fs-uuid --set=root x\n\
         \tlinux\t/vmlinuz-6.8.0-49-generic root=UUID={root_uuid} ro console=tty1 console=ttyS0 $vt_handoff\n\
         \tinitrd\t/initrd.img-6.8.0-49-generic\n}}\n"
    );
    let boot_tree = Tree::default()
        .file("/grub/grub.cfg", cfg)
        .file("/vmlinuz-6.8.0-49-generic", blob("BK", 4000))
        .file("/initrd.img-6.8.0-49-generic", blob("BI", 6000));
    let root_tree = Tree::default().dir("/etc").dir("/boot");
    let boot_fs = mkfs(
        work.path(),
        "boot",
        &boot_tree,
        "22222222-2222-4333-8444-555555555555",
        "boot",
        8,
    );
    let root_fs = mkfs(work.path(), "root", &root_tree, root_uuid, "root", 8);
    let disk = gpt_disk(
        work.path(),
        20,
        &[
            (8, "aaaaaaaa-0000-4000-8000-000000000001"),
            (8, "aaaaaaaa-0000-4000-8000-000000000002"),
        ],
    );
    place(&disk, P1, &boot_fs);
    place(&disk, P1 + 8 * MIB, &root_fs);
    let boot = find_boot(&mut open(&disk)).unwrap();
    assert_eq!(boot.kernel, blob("BK", 4000));
    assert_eq!(boot.initrd, Some(blob("BI", 6000)));
    assert_eq!(
        boot.cmdline,
        format!("root=UUID={root_uuid} ro console=tty1 console=ttyS0")
    );
    assert_eq!(boot.boot_partition.index, 1);
    assert_eq!(boot.root_partition.index, 2);
}

#[test]
fn root_on_separate_partition_symlink_into_boot() {
    if !have(TOOLS) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let boot_tree = Tree::default().file("/vmlinuz-6.1.0-9-amd64", blob("SK", 3000));
    let root_tree = Tree::default()
        .dir("/etc")
        .dir("/boot")
        .link("/vmlinuz", "boot/vmlinuz-6.1.0-9-amd64");
    let root_uuid = "33333333-2222-4333-8444-555555555555";
    let boot_fs = mkfs(
        work.path(),
        "boot",
        &boot_tree,
        "44444444-2222-4333-8444-555555555555",
        "",
        8,
    );
    let root_fs = mkfs(work.path(), "root", &root_tree, root_uuid, "", 8);
    let disk = gpt_disk(
        work.path(),
        20,
        &[
            (8, "aaaaaaaa-0000-4000-8000-000000000001"),
            (8, "aaaaaaaa-0000-4000-8000-000000000002"),
        ],
    );
    place(&disk, P1, &boot_fs);
    place(&disk, P1 + 8 * MIB, &root_fs);
    let boot = find_boot(&mut open(&disk)).unwrap();
    assert_eq!(boot.kernel, blob("SK", 3000));
    assert_eq!(boot.initrd, None);
    assert_eq!(boot.cmdline, format!("root=UUID={root_uuid} ro"));
    assert_eq!(
        (boot.boot_partition.index, boot.root_partition.index),
        (1, 2)
    );
}

#[test]
fn unsupported_root_file_systems_are_named() {
    if !have(&["sgdisk", "truncate"]) {
        return;
    }
    let cases: [(&[u8], u64, FsKind, &str); 3] = [
        (
            b"XFSB",
            0,
            FsKind::Xfs,
            "is XFS; vessel reads only ext2/3/4",
        ),
        (b"LUKS\xba\xbe", 0, FsKind::Luks, "is LUKS-encrypted"),
        (b"_BHRfS_M", 0x10040, FsKind::Btrfs, "is btrfs"),
    ];
    for (magic, at, kind, text) in cases {
        let work = tempfile::tempdir().unwrap();
        let disk = gpt_disk(
            work.path(),
            10,
            &[(8, "aaaaaaaa-0000-4000-8000-000000000001")],
        );
        write_at(&disk, P1 + at, magic);
        let err = find_boot(&mut open(&disk)).unwrap_err();
        assert!(
            matches!(err, Error::Unsupported { index: 1, kind: k } if k == kind),
            "{err:?}"
        );
        assert!(err.to_string().contains(text), "{err}");
    }
}

#[test]
fn truncated_image() {
    if !have(TOOLS) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let raw = debian_gpt(work.path());
    run("truncate", &["-s", "20M", raw.to_str().unwrap()]);
    let err = find_boot(&mut open(&raw)).unwrap_err();
    assert!(matches!(err, Error::Truncated { index: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("looks truncated"), "{err}");
}

#[test]
fn corrupt_primary_gpt_falls_back_to_backup() {
    if !have(TOOLS) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let raw = debian_gpt(work.path());
    write_at(&raw, 512 + 40, &[0xff; 8]);
    let boot = find_boot(&mut open(&raw)).unwrap();
    assert_eq!(boot.root_partition.part_uuid.as_deref(), Some(PARTUUID));
    write_at(&raw, 40 * MIB - 512 + 40, &[0xff; 8]);
    let err = find_boot(&mut open(&raw)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("corrupt GPT: primary header: header CRC mismatch"),
        "{msg}"
    );
    assert!(msg.contains("no valid backup"), "{msg}");
}

#[test]
fn caps_and_missing_kernel() {
    if !have(TOOLS) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let raw = debian_gpt(work.path());
    let small = Limits {
        kernel: 1000,
        ..LIMITS
    };
    let err = find_boot_with(&mut open(&raw), &small).unwrap_err();
    assert!(
        err.to_string()
            .contains("more than the 1000-byte limit for a kernel"),
        "{err}"
    );

    let work = tempfile::tempdir().unwrap();
    let tree = Tree::default()
        .file("/boot/grub/grub.cfg", "set timeout=5\n")
        .dir("/etc");
    let fs = mkfs(work.path(), "root", &tree, ROOT_UUID, "", 8);
    let err = find_boot(&mut open(&fs)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("no kernel found: /boot/grub/grub.cfg on partition 0 has no menuentry"),
        "{msg}"
    );
    assert!(
        msg.contains("/vmlinuz and /boot/vmlinuz are missing"),
        "{msg}"
    );
}

#[test]
fn hostile_symlink_loop() {
    if !have(&["mkfs.ext4"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = Tree::default()
        .link("/vmlinuz", "/a")
        .link("/a", "/vmlinuz")
        .dir("/etc");
    let fs = mkfs(work.path(), "root", &tree, ROOT_UUID, "", 8);
    let err = find_boot(&mut open(&fs)).unwrap_err();
    assert!(matches!(err, Error::NoKernel { .. }), "{err:?}");
}

#[test]
fn mutated_images_never_panic() {
    if !have(&["mkfs.ext4", "sgdisk", "truncate"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = Tree::default()
        .file("/boot/grub/grub.cfg", DEBIAN_CFG)
        .file(&format!("/boot/vmlinuz-{KVER}"), blob("K", 20_000))
        .file(&format!("/boot/initrd.img-{KVER}"), blob("I", 20_000))
        .link("/vmlinuz", &format!("boot/vmlinuz-{KVER}"));
    let fs = mkfs(work.path(), "root", &tree, ROOT_UUID, "", 4);
    let disk = gpt_disk(work.path(), 6, &[(4, PARTUUID)]);
    place(&disk, P1, &fs);
    let pristine = std::fs::read(&disk).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..300 {
        let mut data = pristine.clone();
        // Hit the GPT, the superblock / group descriptors, or anywhere in the first 256 KiB.
        let windows = [(0u64, 34 * 512), (P1, 8192), (P1, 256 << 10)];
        let (base, span) = windows[round % windows.len()];
        for _ in 0..1 + next() % 8 {
            let at = (base + next() % span) as usize;
            data[at] = next() as u8;
        }
        let mut d: Box<dyn block::DiskImage> = Box::new(bootdisk::memdisk::MemDisk::new(data));
        let _ = find_boot(&mut d);
    }
}
