//! The seed image as Linux tools see it: dosfstools' fsck finds no error, blkid reports
//! what cloud-init's NoCloud looks for (TYPE=vfat, LABEL=CIDATA), and mtools lists the
//! long file names and reads the files back byte for byte, also at the user-data cap.

mod common;

use common::{config, extract, have, run, run_ok, seed, tempdir};
use std::process::Command;

#[test]
fn fsck_finds_a_clean_volume() {
    if !have("fsck.vfat", "dosfstools") {
        return;
    }
    let dir = tempdir();
    let (_, image) = seed(dir.path(), &config(None));
    let out = run(Command::new("fsck.vfat").arg("-n").arg(&image));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fsck.vfat: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("3 files") || text.contains("4 files"),
        "{text}"
    );
}

#[test]
fn blkid_sees_a_cidata_vfat_volume() {
    if !have("blkid", "util-linux") {
        return;
    }
    let dir = tempdir();
    let (_, image) = seed(dir.path(), &config(None));
    // -p probes the file itself, not blkid's cache.
    let text = run_ok(
        Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(&image),
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"TYPE=vfat"), "{text}");
    assert!(lines.contains(&"LABEL=CIDATA"), "{text}");
}

#[test]
fn mtools_reads_the_files_back() {
    if !have("mdir", "mtools") || !have("mtype", "mtools") {
        return;
    }
    let dir = tempdir();
    let (files, image) = seed(dir.path(), &config(Some("#!/bin/sh\necho héllo\n")));
    let listing = run_ok(Command::new("mdir").arg("-i").arg(&image).arg("::"));
    for name in ["meta-data", "user-data", "network-config"] {
        assert!(listing.contains(name), "{name} not in {listing}");
    }
    let label = run_ok(
        Command::new("mlabel")
            .args(["-s", "-i"])
            .arg(&image)
            .arg("::"),
    );
    assert!(label.contains("CIDATA"), "{label}");
    for (name, body) in [
        ("meta-data", &files.meta_data),
        ("user-data", &files.user_data),
        ("network-config", &files.network_config),
    ] {
        let text = run_ok(
            Command::new("mtype")
                .args(["-t", "-i"])
                .arg(&image)
                .arg(format!("::{name}")),
        );
        assert_eq!(&text, body, "{name}");
    }
}

#[test]
fn largest_user_data_fits() {
    if !have("fsck.vfat", "dosfstools") || !have("mcopy", "mtools") {
        return;
    }
    let dir = tempdir();
    let script = format!(
        "#!/bin/sh\n{}\n",
        "#".repeat(cloudinit::MAX_EXTRA_USER_DATA - 12)
    );
    let (files, image) = seed(dir.path(), &config(Some(&script)));
    run_ok(Command::new("fsck.vfat").arg("-n").arg(&image));
    let out = tempdir();
    extract(&image, out.path());
    let read = std::fs::read_to_string(out.path().join("user-data")).unwrap_or_default();
    assert_eq!(read.len(), files.user_data.len());
    assert!(read == files.user_data);

    let over = format!("#!/bin/sh\n{}", "#".repeat(cloudinit::MAX_EXTRA_USER_DATA));
    let err = cloudinit::render(&config(Some(&over)))
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("at most 16777216")));
}

#[test]
fn rewriting_replaces_the_image() {
    let dir = tempdir();
    let (_, image) = seed(dir.path(), &config(None));
    let first = std::fs::read(&image).unwrap_or_default();
    let (_, again) = seed(dir.path(), &config(Some("#!/bin/sh\ntrue\n")));
    assert_eq!(image, again);
    assert_ne!(std::fs::read(&image).unwrap_or_default(), first);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("seed.img")],
        "no temporary left"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&image)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o600);
}
