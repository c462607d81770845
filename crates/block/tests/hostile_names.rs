//! Images naming files outside their own directory (hostile downloads), made with qemu-img
//! or by hand: absolute and `..` qcow2 backing names, VMDK descriptors whose writable FLAT
//! extents point elsewhere, symbolic links as disks and as backing files. All are refused
//! with errors naming the file, unless `allow_external_backing` is set.

use std::path::{Path, PathBuf};
use std::process::Command;

use block::{DiskImage, Error, Format, OpenOptions};

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn opts(read_only: bool, allow_external_backing: bool) -> OpenOptions {
    OpenOptions {
        read_only,
        format: None,
        allow_external_backing,
    }
}

fn open(path: &Path, o: &OpenOptions) -> Result<Box<dyn DiskImage>, Error> {
    block::open(path, o)
}

/// The error of opening `path`, which must be an `ExternalReference` naming `name`.
fn assert_refused(path: &Path, read_only: bool, name: &str) {
    let err = open(path, &opts(read_only, false))
        .err()
        .unwrap_or_else(|| panic!("{} was opened", path.display()));
    let msg = err.to_string();
    assert!(matches!(err, Error::ExternalReference { .. }), "{msg}");
    assert!(
        msg.contains(name) && msg.contains("allow-external-backing"),
        "{msg}"
    );
}

/// A directory holding one file with known content, standing in for a host secret.
fn secret(dir: &Path) -> PathBuf {
    let path = dir.join("secret");
    std::fs::write(&path, vec![0x5e; 1 << 20]).unwrap();
    path
}

#[test]
fn qcow2_absolute_backing_refused_unless_allowed() {
    let vm = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let shadow = vm.path().join("shadow.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "/etc/shadow",
        "-F",
        "raw",
        s(&shadow),
        "1M",
    ]);
    assert_refused(&shadow, true, "/etc/shadow");
    assert_refused(&shadow, false, "/etc/shadow");

    let secret = secret(host.path());
    let top = vm.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(&secret),
        "-F",
        "raw",
        s(&top),
    ]);
    assert_refused(&top, true, s(&secret));
    let mut img = open(&top, &opts(true, true)).unwrap();
    let mut buf = [0u8; 512];
    img.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [0x5e; 512]);
    assert_eq!(img.files(), vec![top.clone(), secret]);
}

#[test]
fn qcow2_dotdot_backing_refused() {
    let root = tempfile::tempdir().unwrap();
    let vm = root.path().join("vm");
    std::fs::create_dir(&vm).unwrap();
    secret(root.path());
    let top = vm.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "../secret",
        "-F",
        "raw",
        s(&top),
        "1M",
    ]);
    assert_refused(&top, false, "../secret");
    assert!(open(&top, &opts(false, true)).is_ok());
    // A relative name inside the directory is fine.
    let base = vm.join("base.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    let ok = vm.join("ok.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        s(&ok),
    ]);
    let img = open(&ok, &opts(false, false)).unwrap();
    assert_eq!(img.files(), vec![ok.clone(), vm.join("base.raw")]);
}

/// A monolithicFlat VMDK made by qemu-img whose descriptor's extent line is then replaced by
/// `extent` (a writable FLAT extent naming some file).
fn vmdk_with_extent(dir: &Path, extent: &str) -> PathBuf {
    let desc = dir.join("disk.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=monolithicFlat",
        s(&desc),
        "1M",
    ]);
    let text = std::fs::read_to_string(&desc).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("RW ") {
                format!("RW 2048 FLAT \"{extent}\" 0")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&desc, text.join("\n") + "\n").unwrap();
    desc
}

#[test]
fn vmdk_flat_extent_outside_the_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let vm = root.path().join("vm");
    std::fs::create_dir(&vm).unwrap();
    // Stands in for ~/.ssh/authorized_keys: must stay untouched.
    let keys = root.path().join("authorized_keys");
    std::fs::write(&keys, vec![b'k'; 1 << 20]).unwrap();

    let desc = vmdk_with_extent(&vm, s(&keys));
    assert_refused(&desc, false, s(&keys));
    assert_refused(&desc, true, s(&keys));
    let desc = vmdk_with_extent(&vm, "../authorized_keys");
    assert_refused(&desc, false, "../authorized_keys");
    assert_eq!(std::fs::read(&keys).unwrap(), vec![b'k'; 1 << 20]);

    // Allowed explicitly, the extent is used (and written).
    let desc = vmdk_with_extent(&vm, s(&keys));
    let mut img = open(&desc, &opts(false, true)).unwrap();
    img.write_at(&[b'x'; 512], 0).unwrap();
    assert_eq!(img.files(), vec![desc.clone(), keys.clone()]);
    drop(img);
    assert_eq!(std::fs::read(&keys).unwrap()[..512], [b'x'; 512]);
}

#[test]
fn vmdk_lists_every_extent() {
    let dir = tempfile::tempdir().unwrap();
    let desc = dir.path().join("split.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=twoGbMaxExtentSparse",
        s(&desc),
        "5G",
    ]);
    let img = open(&desc, &opts(true, false)).unwrap();
    let files = img.files();
    assert_eq!(files[0], desc);
    assert_eq!(files.len(), 4, "{files:?}");
    assert!(files[1..].iter().all(|f| f.parent() == Some(dir.path())));
}

#[test]
fn symbolic_links_are_refused_as_disks_and_backing_files() {
    let dir = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let target = secret(host.path());
    let link = dir.path().join("disk.img");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for read_only in [true, false] {
        let err = open(&link, &opts(read_only, true)).err().unwrap();
        assert!(matches!(err, Error::Symlink { .. }), "{err}");
        assert!(err.to_string().contains(s(&link)), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }
    assert!(matches!(
        block::check_disk_path(&link),
        Err(Error::Symlink { .. })
    ));
    // A backing name inside the directory that is a link to a host file.
    let top = dir.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "disk.img",
        "-F",
        "raw",
        s(&top),
        "1M",
    ]);
    let err = open(&top, &opts(true, true)).err().unwrap();
    assert!(matches!(err, Error::Symlink { .. }), "{err}");
    // A format given explicitly goes through the same open.
    let explicit = OpenOptions {
        format: Some(Format::Raw),
        ..opts(false, false)
    };
    assert!(matches!(open(&link, &explicit), Err(Error::Symlink { .. })));
}
