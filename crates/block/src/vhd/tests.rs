use super::*;
use crate::test_support::{
    check_allocation, path_str, qemu_io_fill, qemu_raw, read_all, run, workout, Rng, TempDir,
};
use crate::CreateOptions;

fn rw() -> OpenOptions {
    OpenOptions {
        read_only: false,
        format: Some(Format::Vhd),
        allow_external_backing: false,
    }
}

#[test]
fn vessel_writes_qemu_compares() {
    for fixed in [false, true] {
        let dir = TempDir::new("vhd-rw");
        let path = dir.join("a.vhd");
        let size = (33 << 20) + 7 * 512;
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
            &mut Rng::new(3 + fixed as u64),
            120,
        );
        check_allocation(img.as_mut());
        drop(img);
        let info = run("qemu-img", &["info", "-f", "vpc", path_str(&path)]);
        assert!(
            info.contains(&format!("({size} bytes)")),
            "qemu sees another size: {info}"
        );
        assert!(
            qemu_raw(&path, "vpc") == model,
            "qemu reads different data (fixed={fixed})"
        );
        let raw = dir.join("ref.raw");
        std::fs::write(&raw, &model).unwrap();
        run(
            "qemu-img",
            &[
                "compare",
                "-f",
                "vpc",
                "-F",
                "raw",
                path_str(&path),
                path_str(&raw),
            ],
        );
        let mut img = open(&path, &rw()).unwrap();
        assert!(read_all(img.as_mut()) == model);
    }
}

#[test]
fn qemu_writes_vessel_reads_with_qemu_size() {
    for (sub, size) in [("dynamic", "9M"), ("fixed", "9M"), ("dynamic", "1G")] {
        let dir = TempDir::new("vhd-q");
        let path = dir.join("q.vhd");
        let opt = format!("subformat={sub}");
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "vpc",
                "-o",
                &opt,
                path_str(&path),
                size,
            ],
        );
        qemu_io_fill(&path, "vpc");
        let mut img = open(
            &path,
            &OpenOptions {
                read_only: true,
                format: None,
                allow_external_backing: false,
            },
        )
        .unwrap();
        let info = run("qemu-img", &["info", "-f", "vpc", path_str(&path)]);
        assert!(
            info.contains(&format!("({} bytes)", img.size())),
            "{sub} {size}: {info}"
        );
        if size == "9M" {
            assert!(read_all(img.as_mut()) == qemu_raw(&path, "vpc"), "{sub}");
        } else {
            let mut buf = vec![0u8; 100 << 10];
            img.read_at(&mut buf, 3 << 20).unwrap();
            assert!(buf.iter().all(|&b| b == 0x11));
        }
        check_allocation(img.as_mut());
    }
}

#[test]
fn force_size_images_keep_their_size() {
    let dir = TempDir::new("vhd-force");
    let path = dir.join("f.vhd");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            "force_size=on",
            path_str(&path),
            "1G",
        ],
    );
    let img = open(&path, &rw()).unwrap();
    assert_eq!(img.size(), 1 << 30);
}

#[test]
fn fresh_8g_image_is_small() {
    let dir = TempDir::new("vhd-8g");
    let path = dir.join("big.vhd");
    create(&path, 8 << 30, &CreateOptions::default()).unwrap();
    let img = open(&path, &rw()).unwrap();
    assert_eq!(img.size(), 8 << 30);
    assert!(img.allocated_bytes().unwrap() < 1 << 20);
}

/// Build a differencing chain by hand (qemu cannot create one) and compare all three
/// ways: vessel's reads, a model, and qemu's reads.
#[test]
fn differencing_chain_reads_parent_and_child() {
    let dir = TempDir::new("vhd-diff");
    let base = dir.join("base.vhd");
    let child = dir.join("child.vhd");
    let size = 12u64 << 20;
    create(&base, size, &CreateOptions::default()).unwrap();
    let mut model = vec![0u8; size as usize];
    {
        let mut b = open(&base, &rw()).unwrap();
        workout(b.as_mut(), &mut model, &mut Rng::new(11), 40);
    }
    let backing = Some((PathBuf::from("base.vhd"), Some(Format::Vhd)));
    create(
        &child,
        0,
        &CreateOptions {
            backing,
            ..Default::default()
        },
    )
    .unwrap();
    let mut c = match open(&child, &rw()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.size(), size);
    assert!(c.backing().is_some());
    assert!(
        read_all(c.as_mut()) == model,
        "child does not show the parent's data"
    );
    let parent_model = model.clone();
    workout(c.as_mut(), &mut model, &mut Rng::new(12), 80);
    check_allocation(c.as_mut());
    let map = c.allocation(0, size).unwrap();
    assert!(map.iter().any(|e| e.state == Allocation::Backing));
    assert!(map.iter().any(|e| e.state == Allocation::Data));
    // qemu's vpc driver has no differencing support: it reads a differencing disk as a
    // dynamic one, without its parent. That still checks our layout independently:
    // sectors the child holds read as ours, the rest as zeroes.
    let mut child_only = vec![0u8; size as usize];
    for e in map.iter().filter(|e| e.state == Allocation::Data) {
        let r = e.offset as usize..(e.offset + e.len) as usize;
        child_only[r.clone()].copy_from_slice(&model[r]);
    }
    drop(c);
    assert!(
        qemu_raw(&child, "vpc") == child_only,
        "qemu reads the child's sectors differently"
    );
    // The parent is untouched by writes to the child.
    let mut b = open(&base, &rw()).unwrap();
    assert!(read_all(b.as_mut()) == parent_model);
}

#[test]
fn moved_chain_finds_parent_by_relative_locator() {
    let dir = TempDir::new("vhd-move");
    let base = dir.join("base.vhd");
    let child = dir.join("child.vhd");
    create(&base, 4 << 20, &CreateOptions::default()).unwrap();
    open(&base, &rw())
        .unwrap()
        .write_at(&[0x42; 4096], 8192)
        .unwrap();
    let backing = Some((base.clone(), None));
    create(
        &child,
        4 << 20,
        &CreateOptions {
            backing,
            ..Default::default()
        },
    )
    .unwrap();
    let moved = TempDir::new("vhd-moved");
    std::fs::rename(&base, moved.join("base.vhd")).unwrap();
    std::fs::rename(&child, moved.join("child.vhd")).unwrap();
    let mut c = open(&moved.join("child.vhd"), &rw()).unwrap();
    let mut buf = [0u8; 4096];
    c.read_at(&mut buf, 8192).unwrap();
    assert_eq!(buf, [0x42; 4096]);
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
    let dir = TempDir::new("vhd-corrupt");
    let path = dir.join("c.vhd");
    create(&path, 4 << 20, &CreateOptions::default()).unwrap();
    open(&path, &rw()).unwrap().write_at(&[1; 512], 0).unwrap();
    let good = std::fs::read(&path).unwrap();
    let n = good.len();

    std::fs::write(&path, &good[..100]).unwrap();
    assert!(corrupt_reason(&path).contains("shorter"));

    // Both footers damaged: the checksum names the problem.
    let mut bad = good.clone();
    bad[n - 512 + 40] ^= 1;
    bad[40] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert!(corrupt_reason(&path).contains("checksum"));

    // Only the end footer damaged: the copy at offset 0 is used.
    let mut bad = good.clone();
    bad[n - 512 + 40] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert!(open(&path, &rw()).is_ok());

    let mut bad = good.clone();
    bad[1536..1540].copy_from_slice(&0x0010_0000u32.to_be_bytes());
    std::fs::write(&path, &bad).unwrap();
    assert!(corrupt_reason(&path).contains("past the end"));
}

#[test]
fn random_damage_never_panics() {
    let dir = TempDir::new("vhd-damage");
    let path = dir.join("f.vhd");
    create(&path, 4 << 20, &CreateOptions::default()).unwrap();
    open(&path, &rw())
        .unwrap()
        .write_at(&[9u8; 5000], 1 << 20)
        .unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut rng = Rng::new(5);
    for _ in 0..300 {
        let mut bad = good.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(2048) as usize;
            bad[i] = rng.next() as u8;
        }
        // Keep the footer checksums valid half of the time so deeper checks run.
        if rng.below(2) == 0 {
            let sum = footer::checksum(&bad[..512], 64);
            bad[64..68].copy_from_slice(&sum.to_be_bytes());
            let sum = footer::checksum(&bad[512..1536], 36);
            bad[512 + 36..512 + 40].copy_from_slice(&sum.to_be_bytes());
            let n = bad.len();
            bad[n - 512..].fill(0);
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

/// Rewrite locator `i` of the differencing disk at `child` to `code` with `data`.
fn set_locator(child: &Path, i: usize, code: &[u8; 4], data: &[u8]) {
    let mut bytes = std::fs::read(child).unwrap();
    let e = 512 + 576 + i * 24;
    bytes[e..e + 4].copy_from_slice(code);
    bytes[e + 8..e + 12].copy_from_slice(&(data.len() as u32).to_be_bytes());
    let at = u64::from_be_bytes(bytes[e + 16..e + 24].try_into().unwrap()) as usize;
    bytes[at..at + 512].fill(0);
    bytes[at..at + data.len()].copy_from_slice(data);
    bytes[512 + 36..512 + 40].fill(0);
    let sum = footer::checksum(&bytes[512..1536], 36);
    bytes[512 + 36..512 + 40].copy_from_slice(&sum.to_be_bytes());
    std::fs::write(child, bytes).unwrap();
}

#[test]
fn parent_found_by_mac_url_and_windows_path() {
    let dir = TempDir::new("vhd-loc");
    let elsewhere = TempDir::new("vhd-loc-parent");
    let base = dir.join("base.vhd");
    let child = dir.join("child.vhd");
    create(&base, 2 << 20, &CreateOptions::default()).unwrap();
    open(&base, &rw())
        .unwrap()
        .write_at(&[0x37; 512], 0)
        .unwrap();
    let backing = Some((base.clone(), None));
    create(
        &child,
        0,
        &CreateOptions {
            backing,
            ..Default::default()
        },
    )
    .unwrap();
    let read_with = |p: &Path, opts: &OpenOptions| {
        let mut c = open(p, opts).unwrap();
        let mut b = [0u8; 512];
        c.read_at(&mut b, 0).unwrap();
        b
    };
    let read_first = |p: &Path| read_with(p, &rw());
    // MacX with an absolute file URL to a parent in another directory: refused unless
    // external parents are allowed.
    let moved = elsewhere.join("base.vhd");
    std::fs::rename(&base, &moved).unwrap();
    let url = format!("file://{}", moved.display());
    set_locator(&child, 0, b"MacX", url.as_bytes());
    set_locator(&child, 1, b"Wi2k", b"ignored");
    match open(&child, &rw()) {
        Err(e @ Error::ExternalReference { .. }) => {
            assert!(e.to_string().contains(&moved.display().to_string()), "{e}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("followed an absolute parent locator"),
    }
    let external = OpenOptions {
        allow_external_backing: true,
        ..rw()
    };
    assert_eq!(read_with(&child, &external), [0x37; 512]);
    // A Windows absolute path: the parent is looked for next to the child by name.
    std::fs::rename(&moved, &base).unwrap();
    let win: Vec<u8> = "C:\\Images\\base.vhd"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    set_locator(&child, 0, b"W2ku", &win);
    assert_eq!(read_first(&child), [0x37; 512]);
    // No usable locator and no parent name match: a clear error.
    std::fs::rename(&base, &moved).unwrap();
    match open(&child, &rw()) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("not found"), "{msg}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened without its parent"),
    }
}

#[test]
fn escaping_parent_locator_is_refused() {
    let dir = TempDir::new("vhd-dotdot");
    let outside = TempDir::new("vhd-dotdot-parent");
    let base = outside.join("base.vhd");
    let child = dir.join("child.vhd");
    create(&base, 2 << 20, &CreateOptions::default()).unwrap();
    let backing = Some((base.clone(), None));
    let opts = CreateOptions {
        backing,
        ..Default::default()
    };
    create(&child, 0, &opts).unwrap();
    let outside_dir = base.parent().and_then(|p| p.file_name()).unwrap();
    let hostile = format!("..\\{}\\base.vhd", outside_dir.to_string_lossy());
    let w2ru: Vec<u8> = hostile.encode_utf16().flat_map(u16::to_le_bytes).collect();
    set_locator(&child, 0, b"W2ru", &w2ru);
    let err = open(&child, &rw()).err().expect("followed ..");
    let msg = err.to_string();
    assert!(matches!(err, Error::ExternalReference { .. }), "{msg}");
    assert!(msg.contains("leaves the image's directory"), "{msg}");
    let external = OpenOptions {
        allow_external_backing: true,
        ..rw()
    };
    let img = open(&child, &external).unwrap();
    assert_eq!(img.files().len(), 2);
}
