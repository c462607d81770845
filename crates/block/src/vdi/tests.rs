use super::*;
use crate::test_support::{
    check_allocation, path_str, qemu_check, qemu_io_fill, qemu_raw, read_all, run, workout, Rng,
    TempDir,
};

fn rw() -> OpenOptions {
    OpenOptions {
        read_only: false,
        format: Some(Format::Vdi),
        allow_external_backing: false,
    }
}

fn create_opts(fixed: bool) -> CreateOptions {
    CreateOptions {
        fixed,
        ..Default::default()
    }
}

#[test]
fn vessel_writes_qemu_checks_and_compares() {
    for fixed in [false, true] {
        let dir = TempDir::new("vdi-rw");
        let path = dir.join("a.vdi");
        let size = (40 << 20) + 3 * 512;
        create(&path, size, &create_opts(fixed)).unwrap();
        let mut model = vec![0u8; size as usize];
        let mut img = open(&path, &rw()).unwrap();
        workout(
            img.as_mut(),
            &mut model,
            &mut Rng::new(7 + fixed as u64),
            120,
        );
        check_allocation(img.as_mut());
        drop(img);
        qemu_check(&path, "vdi");
        assert!(
            qemu_raw(&path, "vdi") == model,
            "qemu reads different data (fixed={fixed})"
        );
        // Reopen: the map on disk matches what was written.
        let mut img = open(&path, &rw()).unwrap();
        assert!(read_all(img.as_mut()) == model);
    }
}

#[test]
fn qemu_writes_vessel_reads() {
    for sub in ["off", "on"] {
        let dir = TempDir::new("vdi-q");
        let path = dir.join("q.vdi");
        let opt = format!("static={sub}");
        run(
            "qemu-img",
            &["create", "-f", "vdi", "-o", &opt, path_str(&path), "9M"],
        );
        qemu_io_fill(&path, "vdi");
        let mut img = open(
            &path,
            &OpenOptions {
                read_only: true,
                format: None,
                allow_external_backing: false,
            },
        )
        .unwrap();
        assert_eq!(img.size(), 9 << 20);
        assert!(read_all(img.as_mut()) == qemu_raw(&path, "vdi"), "{sub}");
        check_allocation(img.as_mut());
        assert!(matches!(img.write_at(&[1], 0), Err(Error::ReadOnly)));
    }
}

#[test]
fn fresh_8g_image_is_small() {
    let dir = TempDir::new("vdi-8g");
    let path = dir.join("big.vdi");
    create(&path, 8 << 30, &create_opts(false)).unwrap();
    let img = open(&path, &rw()).unwrap();
    assert_eq!(img.size(), 8 << 30);
    assert!(img.allocated_bytes().unwrap() < 1 << 20);
    qemu_check(&path, "vdi");
}

#[test]
fn discard_compacts_slots_and_qemu_appends_safely() {
    let dir = TempDir::new("vdi-discard");
    let path = dir.join("d.vdi");
    create(&path, 8 << 20, &create_opts(false)).unwrap();
    let mut img = open(&path, &rw()).unwrap();
    for b in 0..4u8 {
        img.write_at(&vec![b + 1; 1 << 20], u64::from(b) << 20)
            .unwrap();
    }
    img.discard(1 << 20, 1 << 20).unwrap();
    let map = img.allocation(0, 4 << 20).unwrap();
    assert_eq!(
        map[1],
        Extent {
            offset: 1 << 20,
            len: 1 << 20,
            state: Allocation::Zero
        }
    );
    drop(img);
    qemu_check(&path, "vdi");
    // qemu allocates its next block at `blocks_allocated`: must not hit a live block.
    run(
        "qemu-io",
        &["-f", "vdi", "-c", "write -P 0x77 6M 4k", path_str(&path)],
    );
    qemu_check(&path, "vdi");
    let mut img = open(&path, &rw()).unwrap();
    let data = read_all(img.as_mut());
    assert!(data[..1 << 20].iter().all(|&b| b == 1));
    assert!(data[1 << 20..2 << 20].iter().all(|&b| b == 0));
    assert!(data[2 << 20..3 << 20].iter().all(|&b| b == 3));
    assert!(data[3 << 20..4 << 20].iter().all(|&b| b == 4));
    assert!(data[6 << 20..(6 << 20) + 4096].iter().all(|&b| b == 0x77));
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
    let dir = TempDir::new("vdi-corrupt");
    let path = dir.join("c.vdi");
    create(&path, 4 << 20, &create_opts(false)).unwrap();
    let good = std::fs::read(&path).unwrap();

    std::fs::write(&path, &good[..100]).unwrap();
    assert!(corrupt_reason(&path).contains("truncated"));

    let mut bad = good.clone();
    bad[0x40] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert!(corrupt_reason(&path).contains("signature"));

    let mut bad = good.clone();
    bad[0x180..0x184].copy_from_slice(&1u32.to_le_bytes()); // blocks_in_image too small
    std::fs::write(&path, &bad).unwrap();
    assert!(corrupt_reason(&path).contains("cannot hold"));

    let mut bad = good.clone();
    bad[0x200..0x204].copy_from_slice(&0u32.to_le_bytes());
    bad[0x204..0x208].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    assert!(corrupt_reason(&path).contains("both map to slot 0"));

    let mut bad = good.clone();
    bad[0x200..0x204].copy_from_slice(&77u32.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    assert!(corrupt_reason(&path).contains("beyond the block count"));
}

#[test]
fn random_header_damage_never_panics() {
    let dir = TempDir::new("vdi-damage");
    let path = dir.join("f.vdi");
    create(&path, 4 << 20, &create_opts(false)).unwrap();
    {
        let mut img = open(&path, &rw()).unwrap();
        img.write_at(&[9u8; 5000], 1 << 20).unwrap();
    }
    let good = std::fs::read(&path).unwrap();
    let mut rng = Rng::new(99);
    for _ in 0..300 {
        let mut bad = good.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(0x220) as usize;
            bad[i] = rng.next() as u8;
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
