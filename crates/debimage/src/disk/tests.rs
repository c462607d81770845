//! Unit tests of the disk layout and, where gdisk and e2fsprogs are installed, a small
//! partitioned ext4 image.

use super::*;

const GIB: u64 = 1 << 30;

#[test]
fn layout_of_two_gib() {
    let l = Layout::new(2 * GIB).unwrap();
    assert_eq!(l.partition_offset(), MIB);
    assert_eq!(l.partition_size(), 2 * GIB - 2 * MIB);
    assert_eq!(l.last_lba, 2 * GIB / SECTOR - 2048 - 1);
}

#[test]
fn layout_rounds_up_and_rejects_tiny_disks() {
    assert_eq!(Layout::new(GIB + 1).unwrap().disk_size, GIB + MIB);
    let err = Layout::new(100 * MIB).unwrap_err().to_string();
    assert!(err.contains("below the minimum"), "{err}");
    assert!(Layout::new(u64::MAX).is_err());
}

#[test]
fn tool_arguments() {
    let l = Layout::new(GIB).unwrap();
    let g = sgdisk_arguments(&l, "d-g", "p-u");
    assert!(g.contains(&"--new=1:2048:2095103".to_string()), "{g:?}");
    assert!(g.contains(&"--partition-guid=1:p-u".to_string()), "{g:?}");
    let m = mkfs_arguments(&l, "f-u");
    assert!(
        m.contains(&"offset=1048576,nodiscard,hash_seed=f-u".to_string()),
        "{m:?}"
    );
}

#[test]
fn sha256_of_known_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, "abc").unwrap();
    assert_eq!(
        sha256(&path).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

/// Build a real 768 MiB image of a tiny tree when the tools are installed (they must be
/// when VESSEL_REQUIRE_TCG is set).
#[test]
fn small_image_has_gpt_and_ext4_at_one_mib() {
    if crate::tools::SGDISK.find().is_err() || crate::tools::MKFS_EXT4.find().is_err() {
        assert!(
            std::env::var_os("VESSEL_REQUIRE_TCG").is_none(),
            "gdisk and e2fsprogs are required"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hello"), "hi\n").unwrap();
    let disk = dir.path().join("disk.raw");
    let l = Layout::new(MIN_SIZE).unwrap();
    let fs_uuid = "0b1d7a6c-1111-4222-8333-444455556666";
    let part_uuid = "5e0c9a3e-aaaa-4bbb-8ccc-ddddeeeeffff";
    create_sparse(&disk, &l).unwrap();
    mkfs(&disk, &l, &tree, fs_uuid, Some(0)).unwrap();
    partition(&disk, &l, "7f7f7f7f-0000-4000-8000-000000000001", part_uuid).unwrap();
    let table = print_table(&disk).unwrap();
    assert!(
        table.contains("   1            2048         1570815"),
        "{table}"
    );
    assert!(table.contains("8300  root"), "{table}");
    let info = std::process::Command::new(SGDISK.find().unwrap())
        .args(["--info=1".as_ref(), disk.as_os_str()])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout).to_ascii_lowercase();
    assert!(
        info.contains(&format!(
            "{} (linux filesystem)",
            LINUX_FS_TYPE.to_ascii_lowercase()
        )),
        "{info}"
    );
    assert!(
        info.contains(&format!("partition unique guid: {part_uuid}")),
        "{info}"
    );
    // The file stays sparse: far less allocated than its size.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&disk).unwrap();
    assert_eq!(meta.len(), MIN_SIZE);
    assert!(
        meta.blocks() * 512 < MIN_SIZE / 4,
        "{} blocks",
        meta.blocks()
    );
    // The ext4 superblock magic sits 1 KiB + 0x38 into the partition, the UUID at +0x68.
    let bytes = std::fs::read(&disk).unwrap();
    let sb = &bytes[(l.partition_offset() + 1024) as usize..][..0x400];
    assert_eq!(&sb[0x38..0x3a], &[0x53, 0xef]);
    assert_eq!(
        sb[0x68..0x78]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        fs_uuid.replace('-', "")
    );
}
