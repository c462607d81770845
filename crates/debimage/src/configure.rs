//! Turning the installed tree into a cloud image: fstab by file-system UUID, a placeholder
//! hostname, cloud-init's datasources, per-VM identity (machine-id, ssh host keys) left for
//! first boot, the `/vmlinuz` and `/initrd.img` symlinks, and no leftovers of the build host.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// The hostname an image has until cloud-init sets the VM's own.
pub const PLACEHOLDER_HOSTNAME: &str = "debian";

/// cloud-init settings: only the NoCloud seed (a `cidata` disk) or nothing, so boots without
/// a seed don't wait for network metadata services; the locale stays the image's C.UTF-8
/// (cloud-init's default en_US.UTF-8 is not generated, and its locale module fails on it).
const CLOUD_CFG: &str = "\
# Written by vessel's image builder.
datasource_list: [ NoCloud, None ]
locale: false
";

/// A unit that makes ssh host keys when cloud-init did not (e.g. cloud-init disabled):
/// Debian's ssh.service refuses to start (`sshd -t`) without keys.
const HOSTKEYS_UNIT: &str = "\
# Written by vessel's image builder: host keys are per VM, so the image ships none.
[Unit]
Description=Generate missing ssh host keys
After=cloud-init.service
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
";
const HOSTKEYS_UNIT_NAME: &str = "vessel-ssh-hostkeys.service";

/// What [`configure`] found in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    /// The kernel release, e.g. `6.1.0-35-cloud-amd64`.
    pub kernel_version: String,
}

/// Configure the tree at `root` for a root file system with UUID `fs_uuid`.
pub fn configure(root: &Path, fs_uuid: &str) -> Result<Configured> {
    write(root, "etc/fstab", &fstab(fs_uuid))?;
    write(root, "etc/hostname", &format!("{PLACEHOLDER_HOSTNAME}\n"))?;
    write(root, "etc/hosts", &hosts(PLACEHOLDER_HOSTNAME))?;
    write(root, "etc/cloud/cloud.cfg.d/99-vessel.cfg", CLOUD_CFG)?;
    write(root, "etc/default/locale", "LANG=C.UTF-8\n")?;
    // dhclient writes the VM's resolver; the build host's must not stay.
    write(root, "etc/resolv.conf", "")?;
    // An empty machine-id makes systemd create a new one on each VM's first boot.
    write(root, "etc/machine-id", "")?;
    remove_if_exists(&root.join("var/lib/dbus/machine-id"))?;
    remove_ssh_host_keys(root)?;
    write(
        root,
        &format!("etc/systemd/system/{HOSTKEYS_UNIT_NAME}"),
        HOSTKEYS_UNIT,
    )?;
    enable(root, HOSTKEYS_UNIT_NAME, "ssh.service")?;
    clean_apt(root)?;
    // Left by mmdebstrap only if dpkg options were passed; the VM's dpkg runs with defaults.
    remove_if_exists(&root.join("etc/dpkg/dpkg.cfg.d/99mmdebstrap"))?;
    let kernel_version = kernel_version(root)?;
    boot_symlinks(root, &kernel_version)?;
    Ok(Configured { kernel_version })
}

/// `/etc/fstab` mounting the root file system by UUID.
pub fn fstab(fs_uuid: &str) -> String {
    format!(
        "# <file system> <mount point> <type> <options> <dump> <pass>\n\
         UUID={fs_uuid} / ext4 rw,discard,errors=remount-ro 0 1\n"
    )
}

fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n\n\
         ::1\t\tlocalhost ip6-localhost ip6-loopback\n\
         ff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n"
    )
}

fn write(root: &Path, relative: &str, text: &str) -> Result<()> {
    let path = root.join(relative);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    // A symlink here (e.g. resolv.conf) would point into the build host: replace it.
    if path
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        std::fs::remove_file(&path).at(&path)?;
    }
    std::fs::write(&path, text).at(path)
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(path),
        _ => Ok(()),
    }
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(read) => {
            let mut paths = read
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<Vec<_>>>()
                .at(dir)?;
            paths.sort();
            Ok(paths)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).at(dir),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn remove_ssh_host_keys(root: &Path) -> Result<()> {
    for key in entries(&root.join("etc/ssh"))? {
        if file_name(&key).starts_with("ssh_host_") {
            remove_if_exists(&key)?;
        }
    }
    Ok(())
}

/// Enable `unit` as wanted by `by`, as `systemctl enable` would (a relative symlink).
fn enable(root: &Path, unit: &str, by: &str) -> Result<()> {
    let dir = root.join(format!("etc/systemd/system/{by}.wants"));
    std::fs::create_dir_all(&dir).at(&dir)?;
    let link = dir.join(unit);
    remove_if_exists(&link)?;
    std::os::unix::fs::symlink(format!("/etc/systemd/system/{unit}"), &link).at(link)
}

/// Remove downloaded packages and package lists (mmdebstrap does too; this is the guarantee).
fn clean_apt(root: &Path) -> Result<()> {
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        for path in entries(&root.join(dir))? {
            if path.is_file() && file_name(&path) != "lock" {
                remove_if_exists(&path)?;
            }
        }
    }
    for path in entries(&root.join("var/cache/apt"))? {
        if file_name(&path).ends_with(".bin") {
            remove_if_exists(&path)?;
        }
    }
    Ok(())
}

/// The newest installed kernel: the release of the highest `boot/vmlinuz-*`.
pub fn kernel_version(root: &Path) -> Result<String> {
    let mut versions: Vec<String> = entries(&root.join("boot"))?
        .iter()
        .filter_map(|p| file_name(p).strip_prefix("vmlinuz-").map(str::to_string))
        .collect();
    versions.sort_by(|a, b| compare_versions(a, b));
    versions
        .pop()
        .ok_or_else(|| Error::Incomplete("no kernel in /boot (linux-image-cloud-amd64)".into()))
}

/// Compare kernel releases numerically where both have digits (6.1.0-10 > 6.1.0-9).
fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<(u64, String)> {
        s.split(['.', '-'])
            .map(|p| (p.parse().unwrap_or(0), p.to_string()))
            .collect()
    };
    parts(a).cmp(&parts(b))
}

/// Make `/vmlinuz` and `/initrd.img` point at the kernel's files unless they already do
/// (Debian's kernel postinst makes them with `do_symlinks`, the default).
fn boot_symlinks(root: &Path, version: &str) -> Result<()> {
    for (link, target) in [
        ("vmlinuz", format!("boot/vmlinuz-{version}")),
        ("initrd.img", format!("boot/initrd.img-{version}")),
    ] {
        if !root.join(&target).is_file() {
            return Err(Error::Incomplete(format!("/{target} is missing")));
        }
        let path = root.join(link);
        if std::fs::read_link(&path).is_ok_and(|t| t == Path::new(&target)) {
            continue;
        }
        remove_if_exists(&path)?;
        std::os::unix::fs::symlink(&target, &path).at(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
