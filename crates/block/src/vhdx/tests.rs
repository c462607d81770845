use std::path::PathBuf;

use super::headers::{guid, HEADER_OFFSETS};
use super::log::encode_entry;
use super::*;
use crate::test_support::{
    check_allocation, path_str, qemu_check, qemu_io_fill, qemu_raw, read_all, run, workout, Rng,
    TempDir,
};
use crate::CreateOptions;

fn rw() -> OpenOptions {
    OpenOptions {
        read_only: false,
        format: Some(Format::Vhdx),
        allow_external_backing: false,
    }
}

fn ro() -> OpenOptions {
    OpenOptions {
        read_only: true,
        format: Some(Format::Vhdx),
        allow_external_backing: false,
    }
}

#[test]
fn vessel_writes_qemu_checks_and_compares() {
    for (fixed, block) in [(false, Some(1 << 20)), (false, None), (true, Some(1 << 20))] {
        let dir = TempDir::new("vhdx-rw");
        let path = dir.join("a.vhdx");
        let size = (41 << 20) + 9 * 512;
        let opts = CreateOptions {
            fixed,
            cluster_size: block,
            ..Default::default()
        };
        create(&path, size, &opts).unwrap();
        let mut img = open(&path, &rw()).unwrap();
        assert_eq!(img.size(), size);
        let mut model = vec![0u8; size as usize];
        workout(
            img.as_mut(),
            &mut model,
            &mut Rng::new(41 + fixed as u64),
            120,
        );
        check_allocation(img.as_mut());
        drop(img);
        qemu_check(&path, "vhdx");
        assert!(
            qemu_raw(&path, "vhdx") == model,
            "qemu reads different data (fixed={fixed} block={block:?})"
        );
        let mut img = open(&path, &rw()).unwrap();
        assert!(read_all(img.as_mut()) == model);
    }
}

#[test]
fn qemu_writes_vessel_reads() {
    for sub in ["dynamic", "fixed"] {
        let dir = TempDir::new("vhdx-q");
        let path = dir.join("q.vhdx");
        let opt = format!("subformat={sub}");
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "vhdx",
                "-o",
                &opt,
                path_str(&path),
                "9M",
            ],
        );
        qemu_io_fill(&path, "vhdx");
        let mut img = open(&path, &ro()).unwrap();
        assert_eq!(img.size(), 9 << 20);
        assert!(read_all(img.as_mut()) == qemu_raw(&path, "vhdx"), "{sub}");
        check_allocation(img.as_mut());
    }
}

#[test]
fn fresh_8g_image_is_small() {
    let dir = TempDir::new("vhdx-8g");
    let path = dir.join("big.vhdx");
    create(&path, 8 << 30, &CreateOptions::default()).unwrap();
    let img = open(&path, &rw()).unwrap();
    assert_eq!(img.size(), 8 << 30);
    assert!(
        img.allocated_bytes().unwrap() < 1 << 20,
        "{}",
        img.allocated_bytes().unwrap()
    );
    drop(img);
    qemu_check(&path, "vhdx");
}

/// Rewrite both headers of the file at `path` with `log_guid`.
fn set_log_guid(path: &Path, log_guid: [u8; 16]) {
    let file = ImageFile::open(path, false, Format::Vhdx).unwrap();
    let (mut h, mut slot) = read_current_header(&file).unwrap();
    h.log_guid = log_guid;
    write_headers(&file, &mut h, &mut slot).unwrap();
}

/// Craft a log that (1) overwrites 4 KiB inside allocated block 0 and (2) allocates
/// block 3 at the end of the file by rewriting the BAT page, across two entries.
fn craft_logged_image(dir: &TempDir) -> (PathBuf, Vec<u8>) {
    let path = dir.join("log.vhdx");
    let size = 8u64 << 20;
    create(
        &path,
        size,
        &CreateOptions {
            cluster_size: Some(1 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    let mut model = vec![0u8; size as usize];
    {
        let mut img = open(&path, &rw()).unwrap();
        img.write_at(&vec![0x11; 1 << 20], 0).unwrap();
        model[..1 << 20].fill(0x11);
    }
    let img = VhdxImage::open(&path, true, false).unwrap();
    let block0 = (img.bat[0] >> 20) * MIB;
    let file_len = img.file.len().unwrap();
    let new_block = file_len.div_ceil(MIB) * MIB;
    let mut bat_page = [0u8; 4096];
    img.file
        .read_exact_at(&mut bat_page, img.bat_offset, "bat")
        .unwrap();
    let entry3 = PAYLOAD_FULLY_PRESENT | (new_block / MIB) << 20;
    bat_page[3 * 8..4 * 8].copy_from_slice(&entry3.to_le_bytes());
    let (log_offset, log_len) = (img.header.log_offset, img.header.log_length);
    drop(img);

    let log_guid = guid("01234567-89AB-CDEF-0123-456789ABCDEF");
    let data_page = [0x5e; 4096];
    let mut block3_page = [0u8; 4096];
    Rng::new(77).fill(&mut block3_page);
    let end = new_block + MIB;
    let e1 = encode_entry(
        10,
        &log_guid,
        0,
        &[(block0 + 8192, data_page)],
        &[],
        (file_len, file_len),
    );
    let tail = 0u32;
    let e2 = encode_entry(
        11,
        &log_guid,
        tail,
        &[(new_block + 4096, block3_page), (3 << 20, bat_page)],
        &[(new_block + 8192, MIB - 8192)],
        (file_len, end),
    );
    assert!((e1.len() + e2.len()) as u64 <= u64::from(log_len));
    let file = ImageFile::open(&path, false, Format::Vhdx).unwrap();
    file.write_all_at(&e1, log_offset).unwrap();
    file.write_all_at(&e2, log_offset + e1.len() as u64)
        .unwrap();
    // A stale entry with a lower sequence number after them must not be replayed.
    let stale = encode_entry(
        3,
        &log_guid,
        0,
        &[(block0, [0xee; 4096])],
        &[],
        (file_len, file_len),
    );
    file.write_all_at(&stale, log_offset + (e1.len() + e2.len()) as u64)
        .unwrap();
    drop(file);
    set_log_guid(&path, log_guid);

    model[8192..8192 + 4096].fill(0x5e);
    let b3 = 3 << 20;
    model[b3 + 4096..b3 + 8192].copy_from_slice(&block3_page);
    (path, model)
}

#[test]
fn log_replay_matches_qemu_replay() {
    let dir = TempDir::new("vhdx-log");
    let (path, model) = craft_logged_image(&dir);
    let before = std::fs::read(&path).unwrap();
    let qemu_copy = dir.join("qemu.vhdx");
    std::fs::write(&qemu_copy, &before).unwrap();

    // Read-only: the log is applied in memory, the file stays as it is.
    let mut img = open(&path, &ro()).unwrap();
    assert!(read_all(img.as_mut()) == model, "read-only replay differs");
    drop(img);
    assert!(
        std::fs::read(&path).unwrap() == before,
        "read-only open changed the file"
    );

    // Read-write: replayed into the file, log GUID cleared, qemu agrees.
    let mut img = open(&path, &rw()).unwrap();
    assert!(read_all(img.as_mut()) == model, "replayed image differs");
    drop(img);
    let file = ImageFile::open(&path, true, Format::Vhdx).unwrap();
    assert_eq!(read_current_header(&file).unwrap().0.log_guid, [0; 16]);
    qemu_check(&path, "vhdx");
    assert!(qemu_raw(&path, "vhdx") == model);

    // qemu replays the same crafted log (check -r all) to the same content.
    run(
        "qemu-img",
        &[
            "check",
            "-q",
            "-r",
            "all",
            "-f",
            "vhdx",
            path_str(&qemu_copy),
        ],
    );
    assert!(
        qemu_raw(&qemu_copy, "vhdx") == model,
        "qemu replays the log differently"
    );
}

#[test]
fn damaged_log_entry_is_not_replayed() {
    let dir = TempDir::new("vhdx-badlog");
    let path = dir.join("b.vhdx");
    create(
        &path,
        4 << 20,
        &CreateOptions {
            cluster_size: Some(1 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    open(&path, &rw())
        .unwrap()
        .write_at(&[0x22; 4096], 0)
        .unwrap();
    let img = VhdxImage::open(&path, true, false).unwrap();
    let block0 = (img.bat[0] >> 20) * MIB;
    let log_offset = img.header.log_offset;
    drop(img);
    let log_guid = guid("11111111-2222-3333-4444-555555555555");
    let mut e = encode_entry(5, &log_guid, 0, &[(block0, [0x99; 4096])], &[], (0, 0));
    e[100] ^= 1; // breaks the checksum
    ImageFile::open(&path, false, Format::Vhdx)
        .unwrap()
        .write_all_at(&e, log_offset)
        .unwrap();
    set_log_guid(&path, log_guid);
    let mut img = open(&path, &rw()).unwrap();
    let mut buf = [0u8; 4096];
    img.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [0x22; 4096]);
}

#[test]
fn differencing_child_over_parent() {
    let dir = TempDir::new("vhdx-diff");
    let base = dir.join("base.vhdx");
    let child = dir.join("child.vhdx");
    let size = 10u64 << 20;
    create(
        &base,
        size,
        &CreateOptions {
            cluster_size: Some(1 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    let mut model = vec![0u8; size as usize];
    workout(
        open(&base, &rw()).unwrap().as_mut(),
        &mut model,
        &mut Rng::new(51),
        30,
    );
    let backing = Some((PathBuf::from("base.vhdx"), Some(Format::Vhdx)));
    create(
        &child,
        0,
        &CreateOptions {
            backing,
            cluster_size: Some(1 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    let parent_model = model.clone();
    let mut c = open(&child, &rw()).unwrap();
    assert!(c.backing().is_some());
    assert!(read_all(c.as_mut()) == model);
    workout(c.as_mut(), &mut model, &mut Rng::new(52), 50);
    check_allocation(c.as_mut());
    drop(c);
    let mut c = open(&child, &ro()).unwrap();
    assert!(read_all(c.as_mut()) == model);
    assert!(read_all(open(&base, &ro()).unwrap().as_mut()) == parent_model);
    // Modifying the parent breaks the linkage: the child refuses to open.
    open(&base, &rw()).unwrap().write_at(&[1], 0).unwrap();
    assert!(matches!(open(&child, &ro()), Err(Error::Corrupt { .. })));
}

#[test]
fn partially_present_block_mixes_child_and_parent() {
    let dir = TempDir::new("vhdx-partial");
    let base = dir.join("base.vhdx");
    let child = dir.join("child.vhdx");
    create(
        &base,
        4 << 20,
        &CreateOptions {
            cluster_size: Some(1 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    open(&base, &rw())
        .unwrap()
        .write_at(&vec![0xbb; 1 << 20], 0)
        .unwrap();
    let backing = Some((base.clone(), None));
    create(
        &child,
        0,
        &CreateOptions {
            backing,
            cluster_size: Some(1 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    // Hand-build: block 0 partially present, sectors 0..8 (4 KiB) in the child.
    let img = VhdxImage::open(&child, true, false).unwrap();
    let (bat_offset, ratio) = (img.bat_offset, img.chunk_ratio);
    let end = img.file.len().unwrap().div_ceil(MIB) * MIB;
    drop(img);
    let f = ImageFile::open(&child, false, Format::Vhdx).unwrap();
    f.write_all_at(&[0xcc; 1 << 20], end).unwrap();
    let mut bitmap = vec![0u8; 1 << 20];
    bitmap[0] = 0xff;
    f.write_all_at(&bitmap, end + MIB).unwrap();
    f.write_all_at(
        &(PAYLOAD_PARTIALLY_PRESENT | (end / MIB) << 20).to_le_bytes(),
        bat_offset,
    )
    .unwrap();
    let sb = SB_PRESENT | ((end + MIB) / MIB) << 20;
    f.write_all_at(&sb.to_le_bytes(), bat_offset + ratio * 8)
        .unwrap();
    drop(f);
    let mut c = open(&child, &ro()).unwrap();
    let mut buf = vec![0u8; 8192];
    c.read_at(&mut buf, 0).unwrap();
    assert!(buf[..4096].iter().all(|&b| b == 0xcc));
    assert!(buf[4096..].iter().all(|&b| b == 0xbb));
    let map = c.allocation(0, 1 << 20).unwrap();
    assert_eq!(
        map[0],
        Extent {
            offset: 0,
            len: 4096,
            state: Allocation::Data
        }
    );
    assert_eq!(map[1].state, Allocation::Backing);
}

fn corrupt_reason(path: &Path) -> String {
    match open(path, &rw()) {
        Err(Error::Corrupt { reason, .. }) => reason,
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("corrupt image opened"),
    }
}

#[test]
fn corrupt_images_are_rejected_with_reasons() {
    let dir = TempDir::new("vhdx-corrupt");
    let path = dir.join("c.vhdx");
    create(
        &path,
        4 << 20,
        &CreateOptions {
            cluster_size: Some(1 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    open(&path, &rw()).unwrap().write_at(&[1; 512], 0).unwrap();
    let good = std::fs::read(&path).unwrap();

    std::fs::write(&path, &good[..4096]).unwrap();
    assert!(corrupt_reason(&path).contains("truncated"));

    let mut bad = good.clone();
    for off in HEADER_OFFSETS {
        bad[off as usize + 100] ^= 1;
    }
    std::fs::write(&path, &bad).unwrap();
    assert!(corrupt_reason(&path).contains("no valid header"));

    // One damaged header: the other one is used.
    let mut bad = good.clone();
    bad[HEADER_OFFSETS[1] as usize + 100] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert!(open(&path, &rw()).is_ok());

    // BAT entry pointing past the end of the file.
    let mut bad = good.clone();
    let e = PAYLOAD_FULLY_PRESENT | 4000u64 << 20;
    bad[3 << 20..(3 << 20) + 8].copy_from_slice(&e.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    assert!(corrupt_reason(&path).contains("outside the file"));

    // Metadata signature.
    let mut bad = good.clone();
    bad[2 << 20] = b'X';
    std::fs::write(&path, &bad).unwrap();
    assert!(corrupt_reason(&path).contains("metadata"));
}

#[test]
fn random_damage_never_panics() {
    let dir = TempDir::new("vhdx-damage");
    let path = dir.join("f.vhdx");
    create(
        &path,
        4 << 20,
        &CreateOptions {
            cluster_size: Some(1 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    open(&path, &rw())
        .unwrap()
        .write_at(&[9u8; 5000], 1 << 20)
        .unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut rng = Rng::new(6);
    let spots: [(usize, usize); 4] = [
        (64 << 10, 128),
        (192 << 10, 128),
        (2 << 20, 64 << 10),
        (3 << 20, 64),
    ];
    for _ in 0..300 {
        let mut bad = good.clone();
        for _ in 0..1 + rng.below(4) {
            let (base, span) = spots[rng.below(4) as usize];
            let i = base + rng.below(span as u64) as usize;
            bad[i] = rng.next() as u8;
        }
        // Re-seal the first header half of the time so deeper checks run.
        if rng.below(2) == 0 {
            let h = &mut bad[64 << 10..(64 << 10) + 4096];
            let sum = crc32c::crc32c_skipping(h, Some(4));
            h[4..8].copy_from_slice(&sum.to_le_bytes());
        }
        std::fs::write(&path, &bad).unwrap();
        if let Ok(mut img) = open(&path, &rw()) {
            let size = img.size().min(8 << 20);
            let mut buf = vec![0u8; size as usize];
            let _ = img.read_at(&mut buf, 0);
            let _ = img.write_at(&[1u8; 3000], size.saturating_sub(3000));
            let _ = img.allocation(0, size);
        }
    }
}

#[test]
fn parent_outside_the_child_directory_needs_the_allow_option() {
    let dir = TempDir::new("vhdx-ext");
    let elsewhere = TempDir::new("vhdx-ext-parent");
    let base = elsewhere.join("base.vhdx");
    let child = dir.join("child.vhdx");
    create(&base, 4 << 20, &CreateOptions::default()).unwrap();
    open(&base, &rw())
        .unwrap()
        .write_at(&[0x5a; 512], 0)
        .unwrap();
    let opts = CreateOptions {
        backing: Some((base.clone(), None)),
        ..Default::default()
    };
    create(&child, 0, &opts).unwrap();
    // The locator holds only the absolute path: refused by default, naming it.
    let err = open(&child, &ro())
        .err()
        .expect("followed an absolute locator");
    assert!(matches!(err, Error::ExternalReference { .. }), "{err}");
    let base_abs = std::fs::canonicalize(&base).unwrap();
    assert!(
        err.to_string().contains(&*base_abs.to_string_lossy()),
        "{err}"
    );
    let external = OpenOptions {
        allow_external_backing: true,
        ..ro()
    };
    let mut c = open(&child, &external).unwrap();
    let mut buf = [0u8; 512];
    c.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [0x5a; 512]);
    assert_eq!(c.files(), vec![child.clone(), base_abs]);
}

#[test]
fn escaping_relative_locator_is_refused() {
    let dir = TempDir::new("vhdx-dotdot");
    let outside = TempDir::new("vhdx-dotdot-target");
    let target = outside.join("base.vhdx");
    create(&target, 1 << 20, &CreateOptions::default()).unwrap();
    let child = dir.join("child.vhdx");
    create(&child, 1 << 20, &CreateOptions::default()).unwrap();
    let file = ImageFile::open(&child, true, Format::Vhdx).unwrap();
    let outside_name = outside.join("x");
    let outside_name = outside_name
        .parent()
        .and_then(|p| p.file_name())
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let hostile = format!("..\\{outside_name}\\base.vhdx");
    let locator = vec![("relative_path".to_string(), hostile.clone())];
    let err = parent::open_parent(&file, &locator, false)
        .err()
        .expect("followed a relative locator with ..");
    let msg = err.to_string();
    assert!(matches!(err, Error::ExternalReference { .. }), "{msg}");
    assert!(
        msg.contains("../") && msg.contains("leaves the image's directory"),
        "{msg}"
    );
    assert!(parent::open_parent(&file, &locator, true).is_ok());
}
