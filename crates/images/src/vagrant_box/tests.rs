//! Boxes built here with the `tar` crate (gzip and plain), good and hostile.

use super::*;
use crate::{BootInfo, ImageStore, StoreError};

const LIBVIRT: &[u8] = br#"{"provider":"libvirt","format":"qcow2","virtual_size":1}"#;

/// The bytes of a small qcow2 with a pattern written into it.
fn qcow2(dir: &Path) -> Vec<u8> {
    let path = dir.join("disk.qcow2");
    block::create(
        &path,
        block::Format::Qcow2,
        4 << 20,
        &block::CreateOptions::default(),
    )
    .unwrap();
    let opts = block::OpenOptions {
        read_only: false,
        format: Some(block::Format::Qcow2),
        allow_external_backing: false,
    };
    let mut img = block::open(&path, &opts).unwrap();
    img.write_at(&[0x5a; 8192], 1 << 20).unwrap();
    img.flush().unwrap();
    drop(img);
    std::fs::read(&path).unwrap()
}

fn header(name: &[u8], len: usize, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    // Written by hand so hostile names (`..`, absolute) get into the archive.
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(len as u64);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    h
}

fn make_box(path: &Path, entries: &[(&[u8], &[u8], tar::EntryType)], gzip: bool) {
    let file = File::create(path).unwrap();
    let sink: Box<dyn std::io::Write> = if gzip {
        Box::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(file)
    };
    let mut b = tar::Builder::new(sink);
    for (name, data, kind) in entries {
        b.append(&header(name, data.len(), *kind), *data).unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
}

use std::io::Write as _;

const FILE: tar::EntryType = tar::EntryType::Regular;

#[test]
fn unpacks_gzip_and_plain_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2(dir.path());
    for gzip in [true, false] {
        let b = dir.path().join(format!("v{gzip}.box"));
        make_box(
            &b,
            &[
                (b"./", b"", tar::EntryType::Directory),
                (b"./box.img", &img, FILE),
                (b"./Vagrantfile", b"Vagrant.configure(\"2\") {}", FILE),
                (b"./metadata.json", LIBVIRT, FILE),
            ],
            gzip,
        );
        assert!(looks_like_box(&b));
        let out = dir.path().join(format!("out{gzip}"));
        std::fs::create_dir(&out).unwrap();
        let (disk, meta) = unpack_box(&b, &out).unwrap();
        assert_eq!(disk, out.join("box.img"));
        assert_eq!(std::fs::read(&disk).unwrap(), img);
        assert_eq!(meta.provider.as_deref(), Some("libvirt"));
        assert_eq!(meta.virtual_size, Some(1));
        let names: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert_eq!(names.len(), 1, "only box.img is written");
    }
}

fn unpack_err(entries: &[(&[u8], &[u8], tar::EntryType)]) -> (BoxError, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("bad.box");
    make_box(&b, entries, true);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    (unpack_box(&b, &out).unwrap_err(), dir)
}

#[test]
fn refuses_boxes_without_metadata_or_for_other_providers() {
    let (e, _d) = unpack_err(&[(b"box.img", b"x", FILE)]);
    assert!(matches!(e, BoxError::NoMetadata { .. }), "{e}");
    assert!(e.to_string().contains("no metadata.json"), "{e}");
    let vbox = br#"{"provider":"virtualbox"}"#;
    let (e, _d) = unpack_err(&[(b"metadata.json", vbox, FILE), (b"box.img", b"x", FILE)]);
    assert!(e.to_string().contains("'virtualbox' provider"), "{e}");
    let (e, _d) = unpack_err(&[(b"metadata.json", LIBVIRT, FILE)]);
    assert!(matches!(e, BoxError::NoDisk { .. }), "{e}");
    let raw = br#"{"provider":"libvirt","format":"raw"}"#;
    let (e, _d) = unpack_err(&[(b"metadata.json", raw, FILE), (b"box.img", b"x", FILE)]);
    assert!(e.to_string().contains("format \"raw\""), "{e}");
    let (e, _d) = unpack_err(&[(b"metadata.json", b"{not json", FILE)]);
    assert!(e.to_string().contains("metadata.json"), "{e}");
    let big = vec![b' '; (MAX_METADATA + 1) as usize];
    let (e, _d) = unpack_err(&[(b"metadata.json", &big, FILE)]);
    assert!(e.to_string().contains("larger than"), "{e}");
}

#[test]
fn refuses_hostile_names_and_links() {
    for name in [&b"../box.img"[..], b"/etc/box.img", b"a/../../x"] {
        let (e, d) = unpack_err(&[(name, b"x", FILE), (b"metadata.json", LIBVIRT, FILE)]);
        assert!(matches!(e, BoxError::BadEntry { .. }), "{e}");
        assert!(!d.path().join("box.img").exists());
    }
    let (e, _d) = unpack_err(&[(b"box.img", b"", tar::EntryType::Symlink)]);
    assert!(e.to_string().contains("only regular files"), "{e}");
    let (e, _d) = unpack_err(&[(b"box.img", b"x", FILE), (b"./box.img", b"y", FILE)]);
    assert!(e.to_string().contains("twice"), "{e}");
    let (e, _d) = unpack_err(&[]);
    assert!(matches!(e, BoxError::NoMetadata { .. }), "{e}");
    // A header claiming 2^60 bytes is refused before anything is written.
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("huge.box");
    let mut builder = tar::Builder::new(File::create(&b).unwrap());
    let mut h = header(b"box.img", 0, FILE);
    h.set_size(1 << 60);
    h.set_cksum();
    builder.append(&h, &[][..]).unwrap();
    builder.into_inner().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let e = unpack_box(&b, &out).unwrap_err();
    assert!(matches!(e, BoxError::NoSpace { .. }), "{e}");
    assert!(!out.join("box.img").exists());
    let (e, _d) = unpack_err(&[]);
    assert!(matches!(e, BoxError::NoMetadata { .. }), "{e}");
    // Not a tar at all.
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("junk.box");
    std::fs::write(&b, [0x1f, 0x8b, 0, 1, 2, 3]).unwrap();
    assert!(unpack_box(&b, dir.path()).is_err());
}

fn boot(_: &Path, _: block::Format, _: &Path) -> std::result::Result<BootInfo, String> {
    Ok(BootInfo {
        kernel: "vmlinuz".into(),
        initrd: None,
        cmdline: "root=/dev/vda1".into(),
        found_by: "test".into(),
    })
}

#[test]
fn store_imports_a_box_and_refuses_a_raw_box_img() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2(dir.path());
    let b = dir.path().join("deb.box");
    make_box(
        &b,
        &[(b"metadata.json", LIBVIRT, FILE), (b"box.img", &img, FILE)],
        true,
    );
    let store = ImageStore::open(Some(dir.path().join("store"))).unwrap();
    let image = store.import_box(&b, "deb", Box::new(boot)).unwrap();
    assert_eq!(image.manifest.format, "qcow2");
    assert_eq!(image.manifest.virtual_size, 4 << 20);
    assert_eq!(image.manifest.source, b.display().to_string());
    assert_eq!(store.get("deb").unwrap().manifest, image.manifest);
    let raw = dir.path().join("raw.box");
    make_box(
        &raw,
        &[
            (b"metadata.json", LIBVIRT, FILE),
            (b"box.img", &[0u8; 4096], FILE),
        ],
        false,
    );
    let e = store.import_box(&raw, "r", Box::new(boot)).unwrap_err();
    assert!(matches!(e, StoreError::BoxNotQcow2 { .. }), "{e}");
    let e = store
        .import_box(&dir.path().join("none.box"), "n", Box::new(boot))
        .unwrap_err();
    assert!(e.to_string().contains("none.box"), "{e}");
    // Nothing left behind by the failures.
    let left: Vec<_> = std::fs::read_dir(&store.root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("deb")]);
}

#[test]
fn a_packed_vessel_box_imports_and_is_never_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.qcow2");
    std::fs::write(&disk, qcow2(dir.path())).unwrap();
    let b = dir.path().join("out.box");
    pack_box(&disk, "qcow2", 4 << 20, &b).unwrap();
    let e = pack_box(&disk, "qcow2", 4 << 20, &b).unwrap_err();
    assert!(matches!(e, BoxError::Exists { .. }), "{e}");
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let (img, meta) = unpack_box(&b, &unpacked).unwrap();
    assert_eq!(meta.provider.as_deref(), Some(VESSEL_PROVIDER));
    assert_eq!(meta.format.as_deref(), Some("qcow2"));
    assert_eq!(meta.virtual_size, Some(1), "4 MiB rounds up to 1 GiB");
    assert_eq!(std::fs::read(img).unwrap(), std::fs::read(&disk).unwrap());
    let store = ImageStore::open(Some(dir.path().join("store"))).unwrap();
    let image = store.import_box(&b, "again", Box::new(boot)).unwrap();
    assert_eq!(image.manifest.virtual_size, 4 << 20);
    // No staging file is left next to the box.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn a_vessel_box_whose_metadata_names_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2(dir.path());
    let b = dir.path().join("v.box");
    let meta = br#"{"provider":"vessel","format":"vmdk"}"#;
    make_box(
        &b,
        &[(b"metadata.json", meta, FILE), (b"box.img", &img, FILE)],
        false,
    );
    let store = ImageStore::open(Some(dir.path().join("store"))).unwrap();
    let e = store.import_box(&b, "v", Box::new(boot)).unwrap_err();
    assert!(matches!(e, StoreError::BoxFormatMismatch { .. }), "{e}");
    // A vessel box may hold a raw disk.
    let raw = dir.path().join("raw.box");
    let meta = br#"{"provider":"vessel"}"#;
    make_box(
        &raw,
        &[
            (b"metadata.json", meta, FILE),
            (b"box.img", &[0u8; 4096], FILE),
        ],
        false,
    );
    let image = store.import_box(&raw, "raw", Box::new(boot)).unwrap();
    assert_eq!(image.manifest.format, "raw");
}
