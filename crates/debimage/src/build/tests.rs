//! Unit tests of build options, steps and the checks made before any work.

use super::*;

#[test]
fn steps_are_ordered_and_named() {
    let names: Vec<String> = Step::ALL.iter().map(Step::to_string).collect();
    assert_eq!(
        names,
        [
            "mmdebstrap",
            "configure",
            "mkfs.ext4",
            "partition",
            "checksum"
        ]
    );
    assert_eq!(Step::Partition.index(), 3);
}

#[test]
fn defaults() {
    let o = BuildOptions::new("debian-12");
    assert_eq!(o.size, 2 << 30);
    assert_eq!(o.apt_root, Path::new("/"));
    assert!(o.mirror.is_none() && o.extra_packages.is_empty());
}

#[test]
fn given_mirror_overrides_the_host() {
    let mut o = BuildOptions::new("bookworm");
    o.apt_root = PathBuf::from("/nonexistent-vessel-root");
    assert!(matches!(o.mirrors("bookworm"), Err(Error::NoMirror { .. })));
    o.mirror = Some("http://mirror.example/debian/".into());
    let m = o.mirrors("bookworm").unwrap();
    assert_eq!(m.archive, "http://mirror.example/debian");
    assert_eq!(m.security, None);
}

#[test]
fn host_security_archive_can_be_replaced() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/apt")).unwrap();
    std::fs::write(
        root.path().join("etc/apt/sources.list"),
        "deb http://h/debian bookworm main\ndeb http://h/debian-security bookworm-security main\n",
    )
    .unwrap();
    let mut o = BuildOptions::new("debian-12");
    o.apt_root = root.path().to_path_buf();
    assert_eq!(
        o.mirrors("bookworm").unwrap().security.as_deref(),
        Some("http://h/debian-security")
    );
    o.security_mirror = Some("http://s/debian-security".into());
    assert_eq!(
        o.mirrors("bookworm").unwrap().security.as_deref(),
        Some("http://s/debian-security")
    );
}

#[test]
fn bad_options_fail_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img.raw");
    let mut steps = Vec::new();
    let mut o = BuildOptions::new("debian-99");
    o.work_dir = dir.path().join("work");
    let err = build(&o, &out, &mut |s| steps.push(s)).unwrap_err();
    assert!(matches!(err, Error::UnknownImage(_)), "{err}");
    o.suite = "debian-12".into();
    o.size = 1 << 20;
    assert!(matches!(
        build(&o, &out, &mut |s| steps.push(s)),
        Err(Error::InvalidOption(_))
    ));
    o.size = DEFAULT_SIZE;
    o.fs_uuid = Some("not-a-uuid".into());
    let err = build(&o, &out, &mut |s| steps.push(s))
        .unwrap_err()
        .to_string();
    assert!(err.contains("file-system UUID"), "{err}");
    assert!(steps.is_empty());
    assert!(!out.exists() && !o.work_dir.exists());
}

#[test]
fn partial_path_appends_a_suffix() {
    assert_eq!(
        partial_path(Path::new("/a/b.raw")),
        Path::new("/a/b.raw.partial")
    );
}

#[test]
fn effective_uid_is_read() {
    assert!(effective_uid().is_ok());
}
