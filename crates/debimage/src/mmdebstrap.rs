//! Installing the image's Debian packages into a directory with mmdebstrap.

use std::ffi::OsString;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::sources::Mirrors;
use crate::tools::{self, MMDEBSTRAP};

/// The packages of the image on top of mmdebstrap's `apt` variant (Essential: yes and apt),
/// close to Debian's own genericcloud images: cloud kernel and initramfs, systemd, cloud-init
/// with ifupdown + ISC dhclient (cloud-init renders network config to ENI on bookworm), ssh,
/// rsync (what Vagrant's default synced folder uses).
pub const PACKAGES: &[&str] = &[
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "dbus",
    "cloud-init",
    "cloud-guest-utils",
    "openssh-server",
    "sudo",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "netbase",
    "ca-certificates",
    "e2fsprogs",
    "rsync",
];

/// Modules forced into the initramfs: vessel's disks and NICs are virtio-pci, and the cloud
/// kernel builds these as modules. Installed before the kernel so its first initramfs has them.
pub const INITRAMFS_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "virtio_net", "ext4"];

/// Where the initramfs module list goes inside the tree (read by mkinitramfs besides
/// /etc/initramfs-tools/modules, and not a conffile).
const MODULES_FILE: &str = "usr/share/initramfs-tools/modules.d/vessel.conf";

/// What one mmdebstrap run installs and from where.
#[derive(Debug, Clone)]
pub struct Bootstrap<'a> {
    /// The Debian codename.
    pub codename: &'a str,
    /// The archives to install from.
    pub mirrors: &'a Mirrors,
    /// Packages beyond [`PACKAGES`].
    pub extra_packages: &'a [String],
    /// Files copied into the tree after the essential packages (before the kernel).
    pub overlay: &'a Path,
    /// The directory to create.
    pub target: &'a Path,
}

/// The apt source lines: the suite and its updates from the archive, plus security.
pub fn source_lines(codename: &str, mirrors: &Mirrors) -> Vec<String> {
    let mut lines = vec![
        format!("deb {} {codename} main", mirrors.archive),
        format!("deb {} {codename}-updates main", mirrors.archive),
    ];
    if let Some(security) = &mirrors.security {
        lines.push(format!("deb {security} {codename}-security main"));
    }
    lines
}

/// mmdebstrap's arguments for `b` (one argument each, no shell).
pub fn arguments(b: &Bootstrap) -> Vec<OsString> {
    let mut packages: Vec<&str> = PACKAGES.to_vec();
    packages.extend(b.extra_packages.iter().map(String::as_str));
    let mut args: Vec<OsString> = [
        "--variant=apt",
        "--mode=root",
        "--format=directory",
        "--components=main",
        "--architectures=amd64",
    ]
    .map(OsString::from)
    .to_vec();
    args.push(format!("--include={}", packages.join(",")).into());
    let mut hook = OsString::from("--essential-hook=sync-in ");
    hook.push(b.overlay);
    hook.push(" /");
    args.push(hook);
    args.push(b.codename.into());
    args.push(b.target.into());
    args.extend(
        source_lines(b.codename, b.mirrors)
            .into_iter()
            .map(OsString::from),
    );
    args
}

/// Write the overlay tree that the essential hook copies in: the initramfs module list.
pub fn write_overlay(overlay: &Path) -> Result<()> {
    let file = overlay.join(MODULES_FILE);
    let dir = file.parent().expect("the modules file has a directory");
    std::fs::create_dir_all(dir).at(dir)?;
    let mut text = String::from("# Added by vessel's image builder: virtio-pci disks and NICs.\n");
    for module in INITRAMFS_MODULES {
        text.push_str(module);
        text.push('\n');
    }
    std::fs::write(&file, text).at(file)
}

/// Run mmdebstrap for `b`; `source_date_epoch` is passed on for reproducible timestamps.
pub fn run(b: &Bootstrap, source_date_epoch: Option<u64>) -> Result<()> {
    if b.overlay.as_os_str().to_string_lossy().contains(' ') {
        return Err(Error::InvalidOption(format!(
            "work directory {} must not contain spaces (mmdebstrap hooks split on them)",
            b.overlay.display()
        )));
    }
    let mut cmd = MMDEBSTRAP.command()?;
    cmd.args(arguments(b));
    if let Some(epoch) = source_date_epoch {
        cmd.env("SOURCE_DATE_EPOCH", epoch.to_string());
    }
    tools::run(MMDEBSTRAP, &mut cmd).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_suite_target_and_mirrors() {
        let mirrors = Mirrors {
            archive: "http://deb.debian.org/debian".into(),
            security: Some("http://deb.debian.org/debian-security".into()),
        };
        let extra = vec!["vim-tiny".to_string()];
        let b = Bootstrap {
            codename: "bookworm",
            mirrors: &mirrors,
            extra_packages: &extra,
            overlay: Path::new("/w/overlay"),
            target: Path::new("/w/root"),
        };
        let args: Vec<String> = arguments(&b)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let include = args.iter().find(|a| a.starts_with("--include=")).unwrap();
        assert!(include.contains("linux-image-cloud-amd64,"), "{include}");
        assert!(include.ends_with(",vim-tiny"), "{include}");
        assert!(args.contains(&"--essential-hook=sync-in /w/overlay /".to_string()));
        let tail = &args[args.len() - 5..];
        assert_eq!(
            tail,
            [
                "bookworm",
                "/w/root",
                "deb http://deb.debian.org/debian bookworm main",
                "deb http://deb.debian.org/debian bookworm-updates main",
                "deb http://deb.debian.org/debian-security bookworm-security main",
            ]
        );
    }

    #[test]
    fn no_security_archive_no_security_line() {
        let mirrors = Mirrors {
            archive: "http://m/debian".into(),
            security: None,
        };
        assert_eq!(source_lines("trixie", &mirrors).len(), 2);
    }

    #[test]
    fn overlay_lists_the_virtio_modules() {
        let dir = tempfile::tempdir().unwrap();
        write_overlay(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MODULES_FILE)).unwrap();
        for module in INITRAMFS_MODULES {
            assert!(text.lines().any(|l| l == *module), "{text}");
        }
    }
}
