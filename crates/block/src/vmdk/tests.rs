use super::*;
use crate::test_support::{
    check_allocation, path_str, qemu_check, qemu_io_fill, qemu_raw, read_all, run, workout, Rng,
    TempDir,
};
use crate::CreateOptions;

fn rw() -> OpenOptions {
    OpenOptions {
        read_only: false,
        format: Some(Format::Vmdk),
        allow_external_backing: false,
    }
}

fn ro() -> OpenOptions {
    OpenOptions {
        read_only: true,
        format: Some(Format::Vmdk),
        allow_external_backing: false,
    }
}

#[test]
fn vessel_writes_qemu_checks_and_compares() {
    for fixed in [false, true] {
        let dir = TempDir::new("vmdk-rw");
        let path = dir.join("a.vmdk");
        let size = (37 << 20) + 5 * 512;
        create(
            &path,
            size,
            &CreateOptions {
                fixed,
                ..Default::default()
            },
        )
        .unwrap();
        let mut img = open(&path, &rw()).unwrap();
        assert_eq!(img.size(), size);
        let mut model = vec![0u8; size as usize];
        workout(
            img.as_mut(),
            &mut model,
            &mut Rng::new(21 + fixed as u64),
            120,
        );
        check_allocation(img.as_mut());
        drop(img);
        qemu_check(&path, "vmdk");
        assert!(
            qemu_raw(&path, "vmdk") == model,
            "qemu reads different data (fixed={fixed})"
        );
        let mut img = open(&path, &rw()).unwrap();
        assert!(read_all(img.as_mut()) == model);
    }
}

fn descriptor_cid(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(16 << 10)]).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("CID="))
        .unwrap()
        .to_string();
    line
}

#[test]
fn first_write_renews_the_cid() {
    for fixed in [false, true] {
        let dir = TempDir::new("vmdk-cid");
        let path = dir.join("c.vmdk");
        create(
            &path,
            4 << 20,
            &CreateOptions {
                fixed,
                ..Default::default()
            },
        )
        .unwrap();
        let before = descriptor_cid(&path);
        let mut img = open(&path, &rw()).unwrap();
        let mut buf = [0u8; 512];
        img.read_at(&mut buf, 0).unwrap();
        assert_eq!(descriptor_cid(&path), before, "reads keep the CID");
        img.write_at(&[1; 512], 0).unwrap();
        img.write_at(&[2; 512], 4096).unwrap();
        drop(img);
        assert_ne!(descriptor_cid(&path), before);
        qemu_check(&path, "vmdk");
        let mut img = open(&path, &ro()).unwrap();
        img.read_at(&mut buf, 4096).unwrap();
        assert_eq!(buf, [2; 512]);
    }
}

#[test]
fn qemu_writes_vessel_reads_small_subformats() {
    for sub in [
        "monolithicSparse",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
    ] {
        let dir = TempDir::new("vmdk-q");
        let path = dir.join("q.vmdk");
        let opt = format!("subformat={sub}");
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "vmdk",
                "-o",
                &opt,
                path_str(&path),
                "9M",
            ],
        );
        qemu_io_fill(&path, "vmdk");
        let mut img = open(&path, &ro()).unwrap();
        assert_eq!(img.size(), 9 << 20, "{sub}");
        assert!(read_all(img.as_mut()) == qemu_raw(&path, "vmdk"), "{sub}");
        check_allocation(img.as_mut());
    }
}

#[test]
fn qemu_split_images_span_extents() {
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let dir = TempDir::new("vmdk-split");
        let path = dir.join("s.vmdk");
        let opt = format!("subformat={sub}");
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "vmdk",
                "-o",
                &opt,
                path_str(&path),
                "4200M",
            ],
        );
        run(
            "qemu-io",
            &[
                "-f",
                "vmdk",
                "-c",
                "write -P 0x22 2047M 2M",
                "-c",
                "write -P 0x33 4199M 1M",
                path_str(&path),
            ],
        );
        let mut img = open(&path, &rw()).unwrap();
        assert_eq!(img.size(), 4200 << 20);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.matches(" \"s-").count() >= 3,
            "{sub}: expected 3 extents in {text}"
        );
        let mut buf = vec![0u8; 4 << 20];
        img.read_at(&mut buf, 2046 << 20).unwrap();
        assert!(buf[..1 << 20].iter().all(|&b| b == 0), "{sub}");
        assert!(buf[1 << 20..3 << 20].iter().all(|&b| b == 0x22), "{sub}");
        assert!(buf[3 << 20..].iter().all(|&b| b == 0), "{sub}");
        // Write across the extent boundary, then qemu checks and reads it.
        img.write_at(&vec![0x44; 3 << 20], 2047 << 20).unwrap();
        drop(img);
        if sub.ends_with("Sparse") {
            qemu_check(&path, "vmdk");
        }
        run(
            "qemu-io",
            &[
                "-f",
                "vmdk",
                "-c",
                "read -P 0x44 2047M 3M",
                "-c",
                "read -P 0x33 4199M 1M",
                path_str(&path),
            ],
        );
        let out = run(
            "qemu-io",
            &["-f", "vmdk", "-c", "read -P 0x44 2047M 3M", path_str(&path)],
        );
        assert!(!out.contains("Pattern verification failed"), "{sub}: {out}");
    }
}

#[test]
fn stream_optimized_reads_compressed_grains() {
    let dir = TempDir::new("vmdk-stream");
    let raw = dir.join("src.raw");
    let path = dir.join("st.vmdk");
    run(
        "qemu-img",
        &["create", "-q", "-f", "raw", path_str(&raw), "9M"],
    );
    qemu_io_fill(&raw, "raw");
    let mut noise = vec![0u8; 300_000];
    Rng::new(4).fill(&mut noise);
    let mut data = std::fs::read(&raw).unwrap();
    data[6 << 20..(6 << 20) + noise.len()].copy_from_slice(&noise);
    std::fs::write(&raw, &data).unwrap();
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            path_str(&raw),
            path_str(&path),
        ],
    );
    let mut img = open(&path, &ro()).unwrap();
    assert!(read_all(img.as_mut()) == data);
    check_allocation(img.as_mut());
    assert!(matches!(open(&path, &rw()), Err(Error::Unsupported { .. })));
}

#[test]
fn delta_disk_over_parent() {
    let dir = TempDir::new("vmdk-delta");
    let base = dir.join("base.vmdk");
    let child = dir.join("child.vmdk");
    let size = 10u64 << 20;
    create(&base, size, &CreateOptions::default()).unwrap();
    let mut model = vec![0u8; size as usize];
    workout(
        open(&base, &rw()).unwrap().as_mut(),
        &mut model,
        &mut Rng::new(31),
        30,
    );
    let backing = Some((PathBuf::from("base.vmdk"), Some(Format::Vmdk)));
    create(
        &child,
        0,
        &CreateOptions {
            backing,
            ..Default::default()
        },
    )
    .unwrap();
    let mut c = open(&child, &rw()).unwrap();
    assert!(read_all(c.as_mut()) == model);
    workout(c.as_mut(), &mut model, &mut Rng::new(32), 60);
    check_allocation(c.as_mut());
    drop(c);
    qemu_check(&child, "vmdk");
    assert!(
        qemu_raw(&child, "vmdk") == model,
        "qemu reads the chain differently"
    );
}

#[test]
fn fresh_8g_image_is_small() {
    let dir = TempDir::new("vmdk-8g");
    let path = dir.join("big.vmdk");
    create(&path, 8 << 30, &CreateOptions::default()).unwrap();
    let img = open(&path, &rw()).unwrap();
    assert_eq!(img.size(), 8 << 30);
    assert!(
        img.allocated_bytes().unwrap() < 1 << 20,
        "{}",
        img.allocated_bytes().unwrap()
    );
    drop(img);
    qemu_check(&path, "vmdk");
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
    let dir = TempDir::new("vmdk-corrupt");
    let path = dir.join("c.vmdk");
    create(&path, 4 << 20, &CreateOptions::default()).unwrap();
    open(&path, &rw()).unwrap().write_at(&[1; 512], 0).unwrap();
    let good = std::fs::read(&path).unwrap();

    std::fs::write(&path, &good[..300]).unwrap();
    assert!(corrupt_reason(&path).contains("truncated"));

    let mut bad = good.clone();
    bad[20..28].copy_from_slice(&3u64.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    assert!(corrupt_reason(&path).contains("grain size"));

    // Grain table entry pointing far past the end of the file.
    let gd = u64::from_le_bytes(good[56..64].try_into().unwrap()) * 512;
    let gt = u64::from(u32::from_le_bytes(
        good[gd as usize..gd as usize + 4].try_into().unwrap(),
    )) * 512;
    let mut bad = good.clone();
    bad[gt as usize..gt as usize + 4].copy_from_slice(&0x00ff_0000u32.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    let mut img = open(&path, &rw()).unwrap();
    let mut buf = [0u8; 512];
    match img.read_at(&mut buf, 0) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("outside"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }

    std::fs::write(
        &path,
        b"# Disk DescriptorFile\nRW 100 FLAT \"missing-quote\n",
    )
    .unwrap();
    assert!(corrupt_reason(&path).contains("descriptor"));
}

#[test]
fn random_damage_never_panics() {
    let dir = TempDir::new("vmdk-damage");
    let path = dir.join("f.vmdk");
    create(&path, 4 << 20, &CreateOptions::default()).unwrap();
    open(&path, &rw())
        .unwrap()
        .write_at(&[9u8; 5000], 1 << 20)
        .unwrap();
    let good = std::fs::read(&path).unwrap();
    let gd = (u64::from_le_bytes(good[56..64].try_into().unwrap()) * 512) as usize;
    let mut rng = Rng::new(8);
    for _ in 0..300 {
        let mut bad = good.clone();
        for _ in 0..1 + rng.below(4) {
            let i = match rng.below(3) {
                0 => rng.below(80) as usize,
                1 => 512 + rng.below(1024) as usize,
                _ => gd + rng.below(4096) as usize,
            };
            let i = i.min(bad.len() - 1);
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
