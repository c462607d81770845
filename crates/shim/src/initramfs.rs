//! The VM's initramfs: the configured base archive (busybox, virtio and vsock modules),
//! then a newc archive with vessel-agent and its `/sbin/vessel-init`, then the container's
//! root under `/rootfs`. The kernel unpacks concatenated archives in order.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use cpio::newc::{self, Builder};

/// What the VM's kernel runs first (`rdinit=`): loads the virtio-pci and vsock modules of
/// the base archive (and virtio-net's, configuring the NIC of `vessel.net=` as the host
/// read the pod's network: [`crate::podnet`]), mounts the kernel's file systems (devpts
/// too, for terminals), with
/// `vessel.volumes` on the command line loads fuse and virtiofs and mounts the share of
/// host directories ([`agent::protocol::VOLUMES_TAG`] at [`agent::protocol::VOLUMES_DIR`]),
/// and becomes vessel-agent.
pub const INIT_PATH: &str = "/sbin/vessel-init";
const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The agent opens processes' terminals through /dev/ptmx, which needs devpts at /dev/pts.
mkdir -p /dev/pts
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
# The pod's network, when the host connected one: vessel.net=MAC,ADDRESS/PREFIX,GATEWAY,MTU.
net=
for arg in $(cat /proc/cmdline); do
    case "$arg" in vessel.net=*) net=${arg#vessel.net=} ;; esac
done
while read -r m; do
    case "${m%.ko}" in
        virtio|virtio_ring|virtio_pci*|virtio_balloon|vsock|vmw_vsock_virtio_transport*) insmod "/lib/modules/$m" ;;
        failover|net_failover|virtio_net) [ -z "$net" ] || insmod "/lib/modules/$m" ;;
    esac
done < /etc/modules.order
# Free page reporting in 128 KiB blocks rather than the 2 MiB pageblock (Linux 6.1 sets the
# pageblock order when the balloon driver registers): a pod VM measured on kvm_pvm gave back
# 9.2 MiB after its guest deleted an 8 MiB file with this, nothing with 2 MiB blocks.
order=/sys/module/page_reporting/parameters/page_reporting_order
[ -w "$order" ] && echo 5 > "$order"
if [ -n "$net" ]; then
    IFS=, read -r mac address gateway mtu <<NET
$net
NET
    ip() { /bin/busybox ip "$@"; }
    ip link set dev lo up
    dev=
    for d in /sys/class/net/*; do
        [ "$(cat "$d/address")" = "$mac" ] && dev=${d##*/}
    done
    if [ -n "$dev" ]; then
        ip link set dev "$dev" mtu "$mtu" up
        ip addr add "$address" dev "$dev"
        [ -z "$gateway" ] || ip route add default via "$gateway" dev "$dev"
    else
        echo "vessel-init: no NIC with MAC $mac" >&2
    fi
fi
# Host directories bound into containers: the VM's virtio-fs share of them (the host says
# so on the command line), mounted where the agent binds them from.
case " $(cat /proc/cmdline) " in
*" vessel.volumes "*)
    while read -r m; do insmod "/lib/modules/fs/$m"; done < /etc/modules.fs
    mkdir -p /run/vessel-volumes
    tries=0
    until mount -t virtiofs vessel-volumes /run/vessel-volumes; do
        tries=$((tries + 1))
        if [ "$tries" -gt 100 ]; then echo "vessel-init: no virtio-fs share of volumes" >&2; break; fi
        sleep 0.1
    done ;;
esac
exec /sbin/vessel-agent
"#;
/// Where the container's root is in the guest (vessel-agent's `/rootfs`).
pub const ROOT_DIR: &str = "rootfs";

/// Errors building the initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: file name is not UTF-8")]
    Name(PathBuf),
    #[error("{0}: larger than a newc archive holds (4 GiB)")]
    TooLarge(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InitramfsError + '_ {
    move |e| InitramfsError::Io(path.to_path_buf(), e)
}

/// Writes the whole initramfs to `out`.
pub fn build(base: &Path, agent: &Path, root: &Path, out: &Path) -> Result<(), InitramfsError> {
    let mut w = BufWriter::new(File::create(out).map_err(io(out))?);
    let mut base_file = File::open(base).map_err(io(base))?;
    let copied = std::io::copy(&mut base_file, &mut w).map_err(io(base))?;
    // Each archive starts 4-byte aligned; the kernel skips the zeros between them.
    let pad = (4 - copied % 4) % 4;
    w.write_all(&[0u8; 3][..pad as usize]).map_err(io(out))?;
    let mut archive = Archive { out: w, ino: 1 };
    archive.dir("sbin", 0o755).map_err(io(out))?;
    archive
        .file("sbin/vessel-init", 0o755, INIT.as_bytes())
        .map_err(io(out))?;
    let agent_bytes = std::fs::read(agent).map_err(io(agent))?;
    archive
        .file("sbin/vessel-agent", 0o755, &agent_bytes)
        .map_err(io(out))?;
    archive.tree(root, ROOT_DIR)?;
    let w = newc::trailer(archive.out).map_err(io(out))?;
    w.into_inner()
        .map_err(|e| InitramfsError::Io(out.into(), e.into_error()))?;
    Ok(())
}

struct Archive<W: Write> {
    out: W,
    ino: u32,
}

impl<W: Write> Archive<W> {
    fn entry(&mut self, name: &str) -> Builder {
        self.ino = self.ino.wrapping_add(1);
        Builder::new(name).ino(self.ino).nlink(1)
    }

    fn dir(&mut self, name: &str, perm: u32) -> std::io::Result<()> {
        let b = self.entry(name).mode(libc::S_IFDIR | perm).nlink(2);
        b.write(&mut self.out, 0).finish().map(drop)
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> std::io::Result<()> {
        let size = u32::try_from(data.len()).map_err(std::io::Error::other)?;
        let mut w = self
            .entry(name)
            .mode(libc::S_IFREG | perm)
            .write(&mut self.out, size);
        w.write_all(data)?;
        w.finish().map(drop)
    }

    /// `dir` and everything under it as `name/...`, directories first, symlinks as links;
    /// sockets are left out.
    fn tree(&mut self, dir: &Path, name: &str) -> Result<(), InitramfsError> {
        let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
        self.node(dir, name, &meta)?;
        if !meta.is_dir() {
            return Ok(());
        }
        let mut entries = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io(dir))?;
        entries.sort();
        for path in entries {
            let file_name = path.file_name().and_then(|n| n.to_str());
            let file_name = file_name.ok_or_else(|| InitramfsError::Name(path.clone()))?;
            self.tree(&path, &format!("{name}/{file_name}"))?;
        }
        Ok(())
    }

    fn node(
        &mut self,
        path: &Path,
        name: &str,
        meta: &std::fs::Metadata,
    ) -> Result<(), InitramfsError> {
        let kind = meta.file_type();
        if kind.is_socket() {
            return Ok(());
        }
        let mtime = u32::try_from(meta.mtime().max(0)).unwrap_or(u32::MAX);
        let rdev = meta.rdev();
        let b = self
            .entry(name)
            .mode(meta.mode())
            .uid(meta.uid())
            .gid(meta.gid())
            .mtime(mtime)
            .rdev_major(libc::major(rdev))
            .rdev_minor(libc::minor(rdev));
        let data = if kind.is_symlink() {
            let target = std::fs::read_link(path).map_err(io(path))?;
            let target = target
                .to_str()
                .ok_or_else(|| InitramfsError::Name(path.into()))?;
            Some(target.as_bytes().to_vec())
        } else {
            None
        };
        let size = match &data {
            Some(d) => d.len() as u64,
            None if kind.is_file() => meta.len(),
            None => 0,
        };
        let size = u32::try_from(size).map_err(|_| InitramfsError::TooLarge(path.into()))?;
        let mut w = b.write(&mut self.out, size);
        match data {
            Some(d) => w.write_all(&d).map_err(io(path))?,
            None if kind.is_file() => {
                let mut f = File::open(path).map_err(io(path))?.take(u64::from(size));
                let copied = std::io::copy(&mut f, &mut w).map_err(io(path))?;
                if copied != u64::from(size) {
                    let e = std::io::Error::other("the file shrank while it was copied");
                    return Err(InitramfsError::Io(path.into(), e));
                }
            }
            None => {}
        }
        w.finish().map_err(io(path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_mounts_the_share_the_host_and_the_agent_name() {
        let mount = format!(
            "mount -t virtiofs {} {}",
            agent::protocol::VOLUMES_TAG,
            agent::protocol::VOLUMES_DIR
        );
        assert!(INIT.contains(&mount), "{INIT}");
        assert!(INIT.contains("\" vessel.volumes \""));
    }

    #[test]
    fn the_archive_holds_init_agent_and_the_root_and_cpio_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("base.cpio"), b"").unwrap();
        std::fs::write(d.join("agent"), b"\x7fELF agent").unwrap();
        std::fs::create_dir_all(d.join("root/bin")).unwrap();
        std::fs::write(d.join("root/bin/busybox"), b"busybox").unwrap();
        std::os::unix::fs::symlink("busybox", d.join("root/bin/sh")).unwrap();
        let out = d.join("initramfs.cpio");
        build(
            &d.join("base.cpio"),
            &d.join("agent"),
            &d.join("root"),
            &out,
        )
        .unwrap();
        let listing = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(File::open(&out).unwrap())
            .output();
        let Ok(listing) = listing else {
            println!("skipped the cpio(1) check: no cpio on this host");
            return;
        };
        let text = String::from_utf8_lossy(&listing.stdout);
        for want in [
            "sbin/vessel-init",
            "sbin/vessel-agent",
            "rootfs/bin/busybox",
            "rootfs/bin/sh -> busybox",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
    }
}
