//! The kernel command line Firecracker derives from the drives: the drive marked
//! `is_root_device` becomes `root=/dev/vda` (it is kept first, so it is the guest's first
//! virtio-blk disk) or `root=PARTUUID=<partuuid>`, followed by `ro` or `rw` from
//! `is_read_only`. Firecracker clients rely on this to boot their root filesystem.

use crate::model::Drive;

/// The root arguments for `drives` (root device first, as the controller keeps them), or
/// `None` when no drive is the root device.
pub fn root_args(drives: &[Drive]) -> Option<String> {
    let (index, root) = drives.iter().enumerate().find(|(_, d)| d.is_root_device)?;
    let device = match &root.partuuid {
        Some(uuid) => format!("PARTUUID={uuid}"),
        None => format!("/dev/{}", virtio_disk_name(index)),
    };
    let mode = if root.is_read_only { "ro" } else { "rw" };
    Some(format!("root={device} {mode}"))
}

/// `boot_args` with the root arguments of `drives` appended, as Firecracker does.
pub fn with_root_args(boot_args: &str, drives: &[Drive]) -> String {
    match root_args(drives) {
        Some(root) if boot_args.trim().is_empty() => root,
        Some(root) => format!("{} {root}", boot_args.trim_end()),
        None => boot_args.to_string(),
    }
}

/// Linux's name for the `index`th virtio-blk disk: vda..vdz, vdaa, vdab, ...
fn virtio_disk_name(index: usize) -> String {
    let mut suffix = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        n -= 1;
        suffix.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    suffix.reverse();
    format!("vd{}", String::from_utf8_lossy(&suffix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CacheType, IoEngine};

    fn drive(id: &str, root: bool) -> Drive {
        Drive {
            drive_id: id.into(),
            path_on_host: "/img".into(),
            is_root_device: root,
            is_read_only: false,
            partuuid: None,
            cache_type: CacheType::Unsafe,
            io_engine: IoEngine::Sync,
            rate_limiter: None,
            format: None,
        }
    }

    #[test]
    fn root_device_becomes_first_disk_read_write() {
        let drives = [drive("rootfs", true), drive("data", false)];
        assert_eq!(root_args(&drives).as_deref(), Some("root=/dev/vda rw"));
        assert_eq!(
            with_root_args("console=ttyS0 reboot=k", &drives),
            "console=ttyS0 reboot=k root=/dev/vda rw"
        );
    }

    #[test]
    fn read_only_and_partuuid() {
        let mut root = drive("rootfs", true);
        root.is_read_only = true;
        root.partuuid = Some("0eaa91a0-01".into());
        assert_eq!(
            root_args(&[root]).as_deref(),
            Some("root=PARTUUID=0eaa91a0-01 ro")
        );
    }

    #[test]
    fn no_root_device_leaves_boot_args() {
        let drives = [drive("data", false)];
        assert_eq!(root_args(&drives), None);
        assert_eq!(with_root_args("console=ttyS0", &drives), "console=ttyS0");
        assert_eq!(with_root_args("", &[drive("r", true)]), "root=/dev/vda rw");
    }

    #[test]
    fn disk_names_follow_linux() {
        assert_eq!(virtio_disk_name(0), "vda");
        assert_eq!(virtio_disk_name(25), "vdz");
        assert_eq!(virtio_disk_name(26), "vdaa");
        assert_eq!(virtio_disk_name(27), "vdab");
    }
}
