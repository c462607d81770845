//! The image store on real files: import, list, overlays, removal and the failures a user
//! can cause (bad names, collisions, FIFOs, backing chains, unbootable images).

use std::path::Path;

use images::{BootInfo, ImageStore, StoreError};

fn boot_ok() -> Box<images::BootFinder<'static>> {
    Box::new(|base: &Path, _fmt, boot: &Path| {
        assert!(base.is_file());
        std::fs::write(boot.join("vmlinuz"), b"kernel").unwrap();
        Ok(BootInfo {
            kernel: "vmlinuz".into(),
            initrd: None,
            cmdline: "root=UUID=1 ro".into(),
            found_by: "test".into(),
        })
    })
}

fn raw_image(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("disk.raw");
    let mut data = vec![0u8; 1 << 20];
    data[512..520].copy_from_slice(b"EFI PART");
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn import_list_overlay_and_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(Some(tmp.path().join("images"))).unwrap();
    let src = raw_image(tmp.path());
    let img = store.import(&src, "deb", boot_ok()).unwrap();
    assert_eq!(img.manifest.format, "raw");
    assert_eq!(img.manifest.virtual_size, 1 << 20);
    let (kernel, initrd, cmdline) = img.boot_files().unwrap();
    assert_eq!(std::fs::read(kernel).unwrap(), b"kernel");
    assert!(initrd.is_none() && cmdline == "root=UUID=1 ro");

    let again = store.import(&src, "deb", boot_ok()).unwrap_err();
    assert!(matches!(again, StoreError::Exists(_)), "{again}");
    let listed: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.unwrap().manifest.name)
        .collect();
    assert_eq!(listed, ["deb"]);

    // An overlay reads the base, takes writes and leaves the base untouched.
    let overlay = tmp.path().join("vm.qcow2");
    assert_eq!(
        img.create_overlay(&overlay, Some(8 << 20)).unwrap(),
        8 << 20
    );
    // The overlay names the store's base by its absolute path, which vessel allows for
    // the overlays it makes itself.
    let opts = block::OpenOptions {
        allow_external_backing: true,
        ..Default::default()
    };
    let mut disk = block::open(&overlay, &opts).unwrap();
    let mut buf = [0u8; 8];
    disk.read_at(&mut buf, 512).unwrap();
    assert_eq!(&buf, b"EFI PART");
    disk.write_at(b"changed!", 512).unwrap();
    disk.flush().unwrap();
    let base = std::fs::read(img.base_path()).unwrap();
    assert_eq!(&base[512..520], b"EFI PART");

    let busy = store.remove("deb", vec!["web".into()]).unwrap_err();
    assert!(busy.to_string().contains("in use by VM(s) web"), "{busy}");
    store.remove("deb", vec![]).unwrap();
    assert!(matches!(store.get("deb"), Err(StoreError::NotFound(_))));
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn failed_imports_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("images");
    let store = ImageStore::open(Some(root.clone())).unwrap();
    let src = raw_image(tmp.path());
    let unbootable = store
        .import(
            &src,
            "x",
            Box::new(|_: &Path, _, _: &Path| Err("no kernel found".into())),
        )
        .unwrap_err();
    assert!(
        unbootable
            .to_string()
            .contains("cannot boot this image directly: no kernel found"),
        "{unbootable}"
    );

    for bad in ["../x", "", "a/b"] {
        assert!(matches!(
            store.import(&src, bad, boot_ok()),
            Err(StoreError::InvalidName(_))
        ));
    }
    let fifo = tmp.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = store.import(&fifo, "f", boot_ok()).unwrap_err();
    assert!(matches!(e, StoreError::NotAFile(_)), "{e}");

    let base = tmp.path().join("base.qcow2");
    block::create(&base, block::Format::Qcow2, 1 << 20, &Default::default()).unwrap();
    let top = tmp.path().join("top.qcow2");
    // A backing file next to the image: refused because a base must stand alone.
    let opts = block::CreateOptions {
        backing: Some(("base.qcow2".into(), None)),
        ..Default::default()
    };
    block::create(&top, block::Format::Qcow2, 1 << 20, &opts).unwrap();
    let e = store.import(&top, "chain", boot_ok()).unwrap_err();
    assert!(matches!(e, StoreError::HasBacking(_)), "{e}");
    // One named by an absolute path is refused before it is even opened.
    let abs = tmp.path().join("abs.qcow2");
    let opts = block::CreateOptions {
        backing: Some((base, None)),
        ..Default::default()
    };
    block::create(&abs, block::Format::Qcow2, 1 << 20, &opts).unwrap();
    let e = store.import(&abs, "chain2", boot_ok()).unwrap_err();
    assert!(e.to_string().contains("allow-external-backing"), "{e}");

    let names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
}

#[test]
fn a_tampered_manifest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(Some(tmp.path().join("images"))).unwrap();
    let img = store
        .import(&raw_image(tmp.path()), "deb", boot_ok())
        .unwrap();
    let path = img.dir.join("manifest.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("base.raw", "../../../etc/passwd")).unwrap();
    let e = store.get("deb").unwrap_err();
    assert!(e.to_string().contains("bad manifest"), "{e}");
}
