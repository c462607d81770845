//! Checks on one request body at a time: value ranges, identifiers, MAC addresses, and that the
//! host files a client names can be opened (as Firecracker checks them when they are PUT, so a
//! typo fails at configuration time rather than at InstanceStart).

use std::fs::{File, FileType, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use thiserror::Error;

use crate::model::{
    BootSource, Drive, HugePages, IoEngine, MachineConfig, NetworkInterface, NetworkMode,
};

/// Most vCPUs vessel gives a VM (xAPIC ids are 8 bits and the IOAPIC takes one).
pub const MAX_VCPU_COUNT: u8 = 254;
/// Least guest memory accepted, in MiB.
pub const MIN_MEM_SIZE_MIB: u64 = 2;
/// Most guest memory accepted, in MiB: 64 TiB, the 46-bit physical address space of x86-64.
pub const MAX_MEM_SIZE_MIB: u64 = 1 << 26;
/// Longest resource id (`drive_id`, `iface_id`).
pub const MAX_ID_LEN: usize = 64;
/// Longest kernel command line accepted; Linux's own limit on x86 is 2048 bytes.
pub const MAX_BOOT_ARGS_LEN: usize = 4096;
/// Longest Linux network interface name (IFNAMSIZ less the NUL).
pub const MAX_HOST_DEV_NAME_LEN: usize = 15;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("The ID cannot be empty.")]
    EmptyId,
    #[error("API Resource IDs can only contain alphanumeric characters and underscores.")]
    InvalidId,
    #[error("API Resource IDs can be at most {MAX_ID_LEN} characters long.")]
    IdTooLong,
    #[error(
        "The vCPU number is invalid: vcpu_count must be between 1 and {MAX_VCPU_COUNT}, got {0}."
    )]
    InvalidVcpuCount(u8),
    #[error(
        "The memory size (MiB) is invalid: mem_size_mib must be between {MIN_MEM_SIZE_MIB} and \
         {MAX_MEM_SIZE_MIB}, got {0}."
    )]
    InvalidMemSize(u64),
    #[error("Enabling simultaneous multithreading (smt) is not supported by vessel.")]
    SmtUnsupported,
    #[error(
        "CPU templates are not supported by vessel: cpu_template must be \"None\", got {0:?}."
    )]
    CpuTemplateUnsupported(String),
    #[error("Dirty page tracking (track_dirty_pages) is not supported by vessel.")]
    DirtyPageTrackingUnsupported,
    #[error("Hugepage-backed guest memory (huge_pages) is not supported by vessel.")]
    HugePagesUnsupported,
    #[error("{field} cannot be empty.")]
    EmptyField { field: &'static str },
    #[error("{field} cannot contain a NUL byte.")]
    NulByte { field: &'static str },
    #[error("boot_args can be at most {MAX_BOOT_ARGS_LEN} bytes long, got {0}.")]
    BootArgsTooLong(usize),
    #[error("The kernel file cannot be opened: {path}: {reason}")]
    KernelFile { path: String, reason: String },
    #[error("The initrd file cannot be opened: {path}: {reason}")]
    InitrdFile { path: String, reason: String },
    #[error("Unable to open the drive file {path}: {reason}")]
    DriveFile { path: String, reason: String },
    #[error(
        "Invalid host_dev_name {0:?}: a Linux interface name has 1 to {MAX_HOST_DEV_NAME_LEN} \
         characters, none of them '/', ':' or whitespace."
    )]
    InvalidHostDevName(String),
    #[error("host_dev_name is required for a tap network interface.")]
    MissingHostDevName,
    #[error("host_dev_name is only for a network interface in tap mode.")]
    HostDevNameWithoutTap,
    #[error("network is required for a network interface in natnet, internal, hostonly or bridged mode.")]
    MissingNetwork,
    #[error(
        "network is only for a network interface in natnet, internal, hostonly or bridged mode."
    )]
    NetworkWithoutMode,
    #[error("Invalid network {0:?}: 1 to {MAX_HOST_DEV_NAME_LEN} characters of [A-Za-z0-9_.-].")]
    InvalidNetworkName(String),
    #[error(
        "io_engine \"Async\" (io_uring) is not supported by vessel: drives use the \"Sync\" \
         engine; omit io_engine or send \"Sync\"."
    )]
    AsyncIoEngineUnsupported,
    #[error("Invalid guest_mac {0:?}: expected six hex octets such as 06:00:ac:10:00:02.")]
    InvalidMac(String),
    #[error("Invalid guest_mac {0}: a multicast address cannot be a unicast interface's MAC.")]
    MulticastMac(String),
}

/// Firecracker's id rule (non-empty, alphanumeric or `_`) plus a length bound.
pub fn validate_id(id: &str) -> Result<(), ValidationError> {
    if id.is_empty() {
        return Err(ValidationError::EmptyId);
    }
    if !id.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
        return Err(ValidationError::InvalidId);
    }
    if id.len() > MAX_ID_LEN {
        return Err(ValidationError::IdTooLong);
    }
    Ok(())
}

pub fn validate_machine_config(cfg: &MachineConfig) -> Result<(), ValidationError> {
    if cfg.vcpu_count == 0 || cfg.vcpu_count > MAX_VCPU_COUNT {
        return Err(ValidationError::InvalidVcpuCount(cfg.vcpu_count));
    }
    if !(MIN_MEM_SIZE_MIB..=MAX_MEM_SIZE_MIB).contains(&cfg.mem_size_mib) {
        return Err(ValidationError::InvalidMemSize(cfg.mem_size_mib));
    }
    if cfg.smt {
        return Err(ValidationError::SmtUnsupported);
    }
    if let Some(template) = &cfg.cpu_template {
        if template != "None" {
            return Err(ValidationError::CpuTemplateUnsupported(template.clone()));
        }
    }
    if cfg.track_dirty_pages {
        return Err(ValidationError::DirtyPageTrackingUnsupported);
    }
    if cfg.huge_pages != HugePages::None {
        return Err(ValidationError::HugePagesUnsupported);
    }
    Ok(())
}

pub fn validate_boot_source(boot: &BootSource) -> Result<(), ValidationError> {
    check_path_text(&boot.kernel_image_path, "kernel_image_path")?;
    if let Some(args) = &boot.boot_args {
        if args.contains('\0') {
            return Err(ValidationError::NulByte { field: "boot_args" });
        }
        if args.len() > MAX_BOOT_ARGS_LEN {
            return Err(ValidationError::BootArgsTooLong(args.len()));
        }
    }
    check_readable_file(&boot.kernel_image_path).map_err(|reason| ValidationError::KernelFile {
        path: boot.kernel_image_path.clone(),
        reason,
    })?;
    if let Some(initrd) = &boot.initrd_path {
        check_path_text(initrd, "initrd_path")?;
        check_readable_file(initrd).map_err(|reason| ValidationError::InitrdFile {
            path: initrd.clone(),
            reason,
        })?;
    }
    Ok(())
}

/// Checks the id and opens the image the way the guest will use it (read-write unless
/// `is_read_only`), so a missing or read-only file is reported now.
pub fn validate_drive(drive: &Drive) -> Result<(), ValidationError> {
    validate_id(&drive.drive_id)?;
    check_path_text(&drive.path_on_host, "path_on_host")?;
    if drive.io_engine == IoEngine::Async {
        return Err(ValidationError::AsyncIoEngineUnsupported);
    }
    if let Some(partuuid) = &drive.partuuid {
        if partuuid.contains('\0') {
            return Err(ValidationError::NulByte { field: "partuuid" });
        }
    }
    let opened = OpenOptions::new()
        .read(true)
        .write(!drive.is_read_only)
        .custom_flags(libc::O_NONBLOCK)
        .open(&drive.path_on_host)
        .map_err(|e| e.to_string())
        .and_then(|file| {
            require_kind(
                &file,
                |k| k.is_file() || k.is_block_device(),
                "a regular file or a block device",
            )
        });
    opened.map_err(|reason| ValidationError::DriveFile {
        path: drive.path_on_host.clone(),
        reason,
    })
}

pub fn validate_network_interface(iface: &NetworkInterface) -> Result<(), ValidationError> {
    validate_id(&iface.iface_id)?;
    let mode = iface.effective_mode();
    match (mode, &iface.host_dev_name) {
        (NetworkMode::Tap, None) => return Err(ValidationError::MissingHostDevName),
        (NetworkMode::Tap, Some(name)) => validate_host_dev_name(name)?,
        (_, Some(_)) => return Err(ValidationError::HostDevNameWithoutTap),
        (_, None) => {}
    }
    match (mode.needs_network(), &iface.network) {
        (true, None) => return Err(ValidationError::MissingNetwork),
        (true, Some(name)) => validate_network_name(name)?,
        (false, Some(_)) => return Err(ValidationError::NetworkWithoutMode),
        (false, None) => {}
    }
    if let Some(mac) = &iface.guest_mac {
        let octets = parse_mac(mac)?;
        if octets[0] & 1 != 0 {
            return Err(ValidationError::MulticastMac(mac.clone()));
        }
    }
    Ok(())
}

/// The rule `--nic` applies to network and bridge names.
fn validate_network_name(name: &str) -> Result<(), ValidationError> {
    let valid = (1..=MAX_HOST_DEV_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name != "."
        && name != "..";
    if valid {
        Ok(())
    } else {
        Err(ValidationError::InvalidNetworkName(name.to_string()))
    }
}

fn validate_host_dev_name(name: &str) -> Result<(), ValidationError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_HOST_DEV_NAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace());
    if valid {
        Ok(())
    } else {
        Err(ValidationError::InvalidHostDevName(name.to_string()))
    }
}

/// Parses `xx:xx:xx:xx:xx:xx` (hex digits in either case).
pub fn parse_mac(text: &str) -> Result<[u8; 6], ValidationError> {
    let invalid = || ValidationError::InvalidMac(text.to_string());
    let mut octets = [0u8; 6];
    let mut parts = text.split(':');
    for octet in octets.iter_mut() {
        let part = parts.next().ok_or_else(invalid)?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        *octet = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
    }
    if parts.next().is_some() {
        return Err(invalid());
    }
    Ok(octets)
}

fn check_path_text(path: &str, field: &'static str) -> Result<(), ValidationError> {
    if path.is_empty() {
        return Err(ValidationError::EmptyField { field });
    }
    if path.contains('\0') {
        return Err(ValidationError::NulByte { field });
    }
    Ok(())
}

/// Opens `path` for reading without blocking (a FIFO would otherwise hold the request
/// until a writer comes) and requires a regular file: `/dev/zero` as a kernel would be read
/// until memory runs out.
fn check_readable_file(path: &str) -> Result<(), String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(Path::new(path))
        .map_err(|e| e.to_string())?;
    require_kind(&file, FileType::is_file, "a regular file")
}

/// What a file other than the expected kinds is, for the error.
fn kind_name(kind: FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

fn require_kind(file: &File, ok: impl Fn(&FileType) -> bool, expected: &str) -> Result<(), String> {
    let kind = file.metadata().map_err(|e| e.to_string())?.file_type();
    if ok(&kind) {
        Ok(())
    } else {
        Err(format!("it is {}, not {expected}", kind_name(kind)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CacheType, IoEngine, RateLimiter, TokenBucket};

    fn machine(vcpu_count: u8, mem_size_mib: u64) -> MachineConfig {
        MachineConfig {
            vcpu_count,
            mem_size_mib,
            ..MachineConfig::default()
        }
    }

    #[test]
    fn vcpu_count_bounds() {
        assert_eq!(
            validate_machine_config(&machine(0, 128)),
            Err(ValidationError::InvalidVcpuCount(0))
        );
        assert!(validate_machine_config(&machine(1, 128)).is_ok());
        assert!(validate_machine_config(&machine(254, 128)).is_ok());
        assert_eq!(
            validate_machine_config(&machine(255, 128)),
            Err(ValidationError::InvalidVcpuCount(255))
        );
    }

    #[test]
    fn mem_size_bounds() {
        assert_eq!(
            validate_machine_config(&machine(1, 1)),
            Err(ValidationError::InvalidMemSize(1))
        );
        assert!(validate_machine_config(&machine(1, MIN_MEM_SIZE_MIB)).is_ok());
        assert!(validate_machine_config(&machine(1, MAX_MEM_SIZE_MIB)).is_ok());
        assert_eq!(
            validate_machine_config(&machine(1, u64::MAX)),
            Err(ValidationError::InvalidMemSize(u64::MAX))
        );
    }

    #[test]
    fn unsupported_machine_features_are_refused() {
        let smt = MachineConfig {
            smt: true,
            ..MachineConfig::default()
        };
        assert_eq!(
            validate_machine_config(&smt),
            Err(ValidationError::SmtUnsupported)
        );
        let template = MachineConfig {
            cpu_template: Some("T2".into()),
            ..MachineConfig::default()
        };
        assert!(matches!(
            validate_machine_config(&template),
            Err(ValidationError::CpuTemplateUnsupported(_))
        ));
        let none_template = MachineConfig {
            cpu_template: Some("None".into()),
            ..MachineConfig::default()
        };
        assert!(validate_machine_config(&none_template).is_ok());
        let dirty = MachineConfig {
            track_dirty_pages: true,
            ..MachineConfig::default()
        };
        assert_eq!(
            validate_machine_config(&dirty),
            Err(ValidationError::DirtyPageTrackingUnsupported)
        );
        let huge = MachineConfig {
            huge_pages: HugePages::Hugetlbfs2M,
            ..MachineConfig::default()
        };
        assert_eq!(
            validate_machine_config(&huge),
            Err(ValidationError::HugePagesUnsupported)
        );
    }

    #[test]
    fn ids_follow_firecracker_rule() {
        assert!(validate_id("rootfs_1").is_ok());
        assert_eq!(validate_id(""), Err(ValidationError::EmptyId));
        assert_eq!(validate_id("a-b"), Err(ValidationError::InvalidId));
        assert_eq!(validate_id("é"), Err(ValidationError::InvalidId));
        assert_eq!(
            validate_id(&"a".repeat(65)),
            Err(ValidationError::IdTooLong)
        );
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac("06:00:AC:10:00:02"), Ok([6, 0, 0xac, 0x10, 0, 2]));
        for bad in [
            "06:00:ac:10:00",
            "06:00:ac:10:00:02:03",
            "6:00:ac:10:00:02",
            "zz:00:ac:10:00:02",
            "+6:00:ac:10:00:02",
            "",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn network_interface_modes() {
        let mut iface = NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: Some("tap0".into()),
            guest_mac: Some("06:00:ac:10:00:02".into()),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
            mode: None,
            network: None,
        };
        assert!(validate_network_interface(&iface).is_ok());
        iface.mode = Some(NetworkMode::Nat);
        assert_eq!(
            validate_network_interface(&iface),
            Err(ValidationError::HostDevNameWithoutTap)
        );
        iface.host_dev_name = None;
        assert!(validate_network_interface(&iface).is_ok());
        iface.mode = Some(NetworkMode::Tap);
        assert_eq!(
            validate_network_interface(&iface),
            Err(ValidationError::MissingHostDevName)
        );
        iface.host_dev_name = Some("a-name-that-is-too-long".into());
        assert!(matches!(
            validate_network_interface(&iface),
            Err(ValidationError::InvalidHostDevName(_))
        ));
        iface.host_dev_name = Some("tap0".into());
        iface.guest_mac = Some("01:00:5e:00:00:01".into());
        assert!(matches!(
            validate_network_interface(&iface),
            Err(ValidationError::MulticastMac(_))
        ));
        iface.guest_mac = None;
        iface.mode = Some(NetworkMode::Internal);
        assert_eq!(
            validate_network_interface(&iface),
            Err(ValidationError::HostDevNameWithoutTap)
        );
        iface.host_dev_name = None;
        assert_eq!(
            validate_network_interface(&iface),
            Err(ValidationError::MissingNetwork)
        );
        iface.network = Some("lab/1".into());
        assert!(matches!(
            validate_network_interface(&iface),
            Err(ValidationError::InvalidNetworkName(_))
        ));
        iface.network = Some("lab1".into());
        assert!(validate_network_interface(&iface).is_ok());
        iface.mode = Some(NetworkMode::Nat);
        assert_eq!(
            validate_network_interface(&iface),
            Err(ValidationError::NetworkWithoutMode)
        );
        iface.network = None;
        iface.tx_rate_limiter = Some(RateLimiter {
            bandwidth: None,
            ops: Some(TokenBucket {
                size: 100,
                one_time_burst: None,
                refill_time: 1000,
            }),
        });
        assert_eq!(validate_network_interface(&iface), Ok(()));
    }

    #[test]
    fn files_are_opened_as_the_guest_will_use_them() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::write(&image, [0u8; 512]).unwrap();
        let mut drive = Drive {
            drive_id: "rootfs".into(),
            path_on_host: image.to_str().unwrap().into(),
            is_root_device: true,
            is_read_only: false,
            partuuid: None,
            cache_type: CacheType::Unsafe,
            io_engine: IoEngine::Sync,
            rate_limiter: None,
            format: None,
        };
        assert!(validate_drive(&drive).is_ok());
        drive.io_engine = IoEngine::Async;
        assert_eq!(
            validate_drive(&drive),
            Err(ValidationError::AsyncIoEngineUnsupported)
        );
        drive.io_engine = IoEngine::Sync;
        let bucket = |size, refill_time| TokenBucket {
            size,
            one_time_burst: None,
            refill_time,
        };
        drive.rate_limiter = Some(RateLimiter {
            bandwidth: Some(bucket(0, 100)),
            ops: Some(bucket(10, 0)),
        });
        assert!(
            validate_drive(&drive).is_ok(),
            "empty buckets limit nothing"
        );
        drive.rate_limiter = Some(RateLimiter {
            bandwidth: Some(bucket(1 << 20, 100)),
            ops: None,
        });
        assert_eq!(validate_drive(&drive), Ok(()));
        drive.rate_limiter = None;
        drive.path_on_host = dir.path().to_str().unwrap().into();
        drive.is_read_only = true;
        assert!(matches!(
            validate_drive(&drive),
            Err(ValidationError::DriveFile { .. })
        ));
        drive.path_on_host = dir.path().join("missing").to_str().unwrap().into();
        assert!(matches!(
            validate_drive(&drive),
            Err(ValidationError::DriveFile { .. })
        ));

        let boot = BootSource {
            kernel_image_path: dir.path().join("nope").to_str().unwrap().into(),
            boot_args: None,
            initrd_path: None,
        };
        let err = validate_boot_source(&boot).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("The kernel file cannot be opened"),
            "{err}"
        );
        let boot = BootSource {
            kernel_image_path: image.to_str().unwrap().into(),
            boot_args: Some("console=ttyS0\0".into()),
            initrd_path: None,
        };
        assert_eq!(
            validate_boot_source(&boot),
            Err(ValidationError::NulByte { field: "boot_args" })
        );
    }
}
