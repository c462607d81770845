//! Builds the debian-12 image for real (mmdebstrap from the host's mirror, about two
//! minutes) and checks it from outside with sgdisk, dd and debugfs; `boots_under_tcg` boots
//! it under QEMU's software CPU up to a login prompt.

mod common;

use std::process::Command;

use common::{built, cat, debugfs, run_ok, tool_path, tools_present};
use debimage::Step;

#[test]
fn image_has_gpt_root_partition_and_manifest() {
    if !tools_present(&[
        ("dd", "coreutils"),
        ("debugfs", "e2fsprogs"),
        ("sha256sum", "coreutils"),
    ]) {
        return;
    }
    let b = built();
    eprintln!("build took {:.1}s", b.elapsed.as_secs_f64());
    assert_eq!(b.steps, Step::ALL);
    let m = &b.manifest;
    assert_eq!(
        (m.image.as_str(), m.suite.as_str()),
        ("debian-12", "bookworm")
    );
    assert_eq!(m.disk_size, 2 << 30);
    assert_eq!(std::fs::metadata(&b.image).unwrap().len(), m.disk_size);
    for package in [
        "linux-image-cloud-amd64",
        "cloud-init",
        "openssh-server",
        "sudo",
        "systemd-sysv",
    ] {
        assert!(
            m.package_version(package).is_some(),
            "{package} not in the manifest"
        );
    }
    assert!(
        m.kernel_version.ends_with("-cloud-amd64"),
        "{}",
        m.kernel_version
    );
    assert_eq!(
        m.kernel_cmdline,
        format!("root=UUID={} ro console=ttyS0", m.fs_uuid)
    );
    let sum = run_ok(Command::new("sha256sum").arg(&b.image));
    assert_eq!(sum.split_whitespace().next(), Some(m.sha256.as_str()));
    let back: debimage::Manifest = toml::from_str(&m.to_toml()).unwrap();
    assert_eq!(&back, m);

    let table = run_ok(Command::new(tool_path("sgdisk")).arg("-p").arg(&b.image));
    assert!(
        table.contains(&format!(
            "Disk identifier (GUID): {}",
            m.disk_guid.to_uppercase()
        )),
        "{table}"
    );
    let first = table
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .expect(&table);
    let cols: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(
        (cols[1], cols[5], cols[6]),
        ("2048", "8300", "root"),
        "{first}"
    );
    let info = run_ok(
        Command::new(tool_path("sgdisk"))
            .arg("-i")
            .arg("1")
            .arg(&b.image),
    );
    assert!(
        info.contains("0FC63DAF-8483-4772-8E79-3D69D8477DE4 (Linux filesystem)"),
        "{info}"
    );
    assert!(info.contains(&m.partition_uuid.to_uppercase()), "{info}");

    let header = run_ok(
        Command::new(tool_path("dumpe2fs"))
            .arg("-h")
            .arg(&b.partition),
    );
    assert!(
        header.contains(&format!("Filesystem UUID:          {}", m.fs_uuid)),
        "{header}"
    );
    assert!(
        header.contains("Filesystem volume name:   root"),
        "{header}"
    );
}

#[test]
fn root_file_system_is_a_bootable_cloud_image() {
    if !tools_present(&[("dd", "coreutils"), ("debugfs", "e2fsprogs")]) {
        return;
    }
    let b = built();
    let (p, m) = (&b.partition, &b.manifest);
    let fstab = cat(p, "/etc/fstab");
    assert!(
        fstab.contains(&format!("UUID={} / ext4 ", m.fs_uuid)),
        "{fstab}"
    );
    for (link, target) in [("/vmlinuz", "vmlinuz"), ("/initrd.img", "initrd.img")] {
        let stat = debugfs(p, &format!("stat {link}"));
        assert!(stat.contains("Type: symlink"), "{stat}");
        assert!(
            stat.contains(&format!("boot/{target}-{}", m.kernel_version)),
            "{stat}"
        );
    }
    for file in [
        format!("/boot/vmlinuz-{}", m.kernel_version),
        format!("/boot/initrd.img-{}", m.kernel_version),
        "/usr/bin/cloud-init".into(),
        "/usr/sbin/sshd".into(),
        "/usr/bin/sudo".into(),
        "/usr/sbin/ifup".into(),
        "/sbin/dhclient".into(),
    ] {
        let stat = debugfs(p, &format!("stat {file}"));
        assert!(stat.contains("Type: regular"), "{file}: {stat}");
    }
    assert_eq!(cat(p, "/etc/hostname"), "debian\n");
    assert_eq!(cat(p, "/etc/machine-id"), "");
    assert!(cat(p, "/etc/cloud/cloud.cfg.d/99-vessel.cfg")
        .contains("datasource_list: [ NoCloud, None ]"));
    let ssh = debugfs(p, "ls /etc/ssh");
    assert!(
        ssh.contains("sshd_config") && !ssh.contains("ssh_host_"),
        "{ssh}"
    );
    let lists = debugfs(p, "ls /var/cache/apt/archives");
    assert!(!lists.contains(".deb"), "{lists}");
    let modules = cat(p, "/usr/share/initramfs-tools/modules.d/vessel.conf");
    assert!(modules.contains("virtio_blk"), "{modules}");
}

/// A mirror that does not answer fails in mmdebstrap with its own words, leaves no image and
/// removes the scratch directory.
#[test]
fn unreachable_mirror_fails_cleanly() {
    if !tools_present(&[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img.raw");
    let mut opts = debimage::BuildOptions::new("debian-12");
    opts.mirror = Some("http://127.0.0.1:9/debian".into());
    opts.work_dir = dir.path().join("work");
    let mut steps = Vec::new();
    let err = debimage::build(&opts, &out, &mut |s| steps.push(s)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, debimage::Error::ToolFailed { .. }), "{text}");
    assert!(text.starts_with("mmdebstrap failed"), "{text}");
    assert!(text.contains("127.0.0.1"), "{text}");
    assert_eq!(steps, [Step::Mmdebstrap]);
    assert!(!out.exists());
    let partial = dir.path().join("img.raw.partial");
    assert!(!partial.exists());
    let left: Vec<_> = std::fs::read_dir(&opts.work_dir).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Boots the image under TCG with the manifest's command line and no cloud-init seed (the
/// None datasource): the virtio disk and NIC come up, cloud-init makes ssh host keys and
/// finishes, and the serial console offers a login.
#[test]
fn boots_under_tcg() {
    if !tools_present(&[
        ("dd", "coreutils"),
        ("debugfs", "e2fsprogs"),
        ("qemu-system-x86_64", "qemu-system-x86"),
    ]) {
        return;
    }
    let b = built();
    let boot = common::qemu::boot(b, std::time::Duration::from_secs(900));
    eprintln!(
        "booted to cloud-init's end in {:.1}s",
        boot.elapsed.as_secs_f64()
    );
    let c = &boot.console;
    assert!(c.contains("Debian GNU/Linux 12 (bookworm)"), "{c}");
    assert!(
        !c.contains("[WARNING]: Running module"),
        "a cloud-init module failed:\n{c}"
    );
    assert!(
        c.contains("BEGIN SSH HOST KEY FINGERPRINTS"),
        "cloud-init made no host keys:\n{c}"
    );
    assert!(
        c.contains("10.0.2.15"),
        "no DHCP address on the virtio NIC:\n{c}"
    );
    assert!(c.contains("login:"), "no login prompt on ttyS0:\n{c}");
    assert!(!c.contains("Kernel panic"), "{c}");
}
