//! Unit tests of the tree configuration on a fake installed tree.

use super::*;

const FS_UUID: &str = "0b1d7a6c-1111-4222-8333-444455556666";

fn fake_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in [
        "boot",
        "etc/ssh",
        "var/lib/dbus",
        "var/cache/apt/archives/partial",
        "var/lib/apt/lists",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in [
        "boot/vmlinuz-6.1.0-9-cloud-amd64",
        "boot/initrd.img-6.1.0-9-cloud-amd64",
        "boot/vmlinuz-6.1.0-10-cloud-amd64",
        "boot/initrd.img-6.1.0-10-cloud-amd64",
        "etc/ssh/ssh_host_ed25519_key",
        "etc/ssh/ssh_host_ed25519_key.pub",
        "etc/ssh/sshd_config",
        "var/cache/apt/archives/bash_5.2_amd64.deb",
        "var/cache/apt/pkgcache.bin",
        "var/lib/apt/lists/lock",
        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
    ] {
        std::fs::write(root.join(f), "x").unwrap();
    }
    std::fs::write(
        root.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/machine-id", root.join("var/lib/dbus/machine-id")).unwrap();
    std::os::unix::fs::symlink(
        "/run/systemd/resolve/stub-resolv.conf",
        root.join("etc/resolv.conf"),
    )
    .unwrap();
    dir
}

fn read(root: &Path, f: &str) -> String {
    std::fs::read_to_string(root.join(f)).unwrap()
}

#[test]
fn configure_writes_identity_free_cloud_tree() {
    let dir = fake_tree();
    let root = dir.path();
    let done = configure(root, FS_UUID).unwrap();
    assert_eq!(done.kernel_version, "6.1.0-10-cloud-amd64");
    assert!(read(root, "etc/fstab").contains(&format!("UUID={FS_UUID} / ext4 ")));
    assert_eq!(read(root, "etc/hostname"), "debian\n");
    assert!(read(root, "etc/hosts").contains("127.0.1.1\tdebian"));
    assert!(read(root, "etc/cloud/cloud.cfg.d/99-vessel.cfg")
        .contains("datasource_list: [ NoCloud, None ]"));
    assert!(read(root, "etc/cloud/cloud.cfg.d/99-vessel.cfg").contains("locale: false"));
    assert_eq!(read(root, "etc/default/locale"), "LANG=C.UTF-8\n");
    assert_eq!(read(root, "etc/machine-id"), "");
    assert_eq!(read(root, "etc/resolv.conf"), "");
    assert!(!root.join("var/lib/dbus/machine-id").exists());
    assert!(!root.join("etc/ssh/ssh_host_ed25519_key").exists());
    assert!(!root.join("etc/ssh/ssh_host_ed25519_key.pub").exists());
    assert!(root.join("etc/ssh/sshd_config").exists());
    assert!(!root
        .join("var/cache/apt/archives/bash_5.2_amd64.deb")
        .exists());
    assert!(!root.join("var/cache/apt/pkgcache.bin").exists());
    assert!(root.join("var/lib/apt/lists/lock").exists());
    assert_eq!(
        std::fs::read_dir(root.join("var/lib/apt/lists"))
            .unwrap()
            .count(),
        1
    );
    let wants = root.join("etc/systemd/system/ssh.service.wants/vessel-ssh-hostkeys.service");
    assert_eq!(
        std::fs::read_link(wants).unwrap(),
        Path::new("/etc/systemd/system/vessel-ssh-hostkeys.service")
    );
    for (link, target) in [
        ("vmlinuz", "boot/vmlinuz-6.1.0-10-cloud-amd64"),
        ("initrd.img", "boot/initrd.img-6.1.0-10-cloud-amd64"),
    ] {
        assert_eq!(
            std::fs::read_link(root.join(link)).unwrap(),
            Path::new(target)
        );
    }
    // Running it again changes nothing and does not fail.
    assert_eq!(configure(root, FS_UUID).unwrap(), done);
}

#[test]
fn tree_without_kernel_is_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let err = configure(dir.path(), FS_UUID).unwrap_err().to_string();
    assert!(err.contains("no kernel"), "{err}");
}

#[test]
fn kernel_without_initrd_is_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("boot")).unwrap();
    std::fs::write(dir.path().join("boot/vmlinuz-6.1.0-1-cloud-amd64"), "x").unwrap();
    let err = configure(dir.path(), FS_UUID).unwrap_err().to_string();
    assert!(
        err.contains("/boot/initrd.img-6.1.0-1-cloud-amd64 is missing"),
        "{err}"
    );
}
