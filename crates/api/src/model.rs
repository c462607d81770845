//! The JSON bodies of vessel's API, shaped like Firecracker's (swagger/firecracker.yaml) so
//! Firecracker clients work unchanged. Every request body rejects unknown fields, as
//! Firecracker's does. These types are also the plain configuration handed to the VMM backend:
//! paths and strings as the client sent them, integers, and small enums.

use serde::{Deserialize, Serialize};

/// `PUT /machine-config`: the guest's vCPUs and memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Number of vCPUs, 1..=254.
    pub vcpu_count: u8,
    /// Guest memory in MiB, at least [`crate::MIN_MEM_SIZE_MIB`].
    pub mem_size_mib: u64,
    /// Simultaneous multithreading; vessel accepts only `false`.
    #[serde(default)]
    pub smt: bool,
    /// Firecracker CPU template name; vessel accepts only `"None"` (or no field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
    /// Dirty page tracking for diff snapshots; vessel accepts only `false`.
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// Hugepage backing of guest memory; vessel accepts only `"None"`.
    #[serde(default)]
    pub huge_pages: HugePages,
}

impl Default for MachineConfig {
    /// Firecracker's defaults: 1 vCPU, 128 MiB.
    fn default() -> Self {
        MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            cpu_template: None,
            track_dirty_pages: false,
            huge_pages: HugePages::None,
        }
    }
}

impl MachineConfig {
    /// Guest memory in bytes (validated configurations never overflow).
    pub fn mem_size_bytes(&self) -> u64 {
        self.mem_size_mib.saturating_mul(1 << 20)
    }
}

/// `PATCH /machine-config`: the fields to change, others stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    pub vcpu_count: Option<u8>,
    pub mem_size_mib: Option<u64>,
    pub smt: Option<bool>,
    pub cpu_template: Option<String>,
    pub track_dirty_pages: Option<bool>,
    pub huge_pages: Option<HugePages>,
}

impl MachineConfigUpdate {
    /// `base` with this update's fields replaced.
    pub fn apply_to(&self, base: &MachineConfig) -> MachineConfig {
        MachineConfig {
            vcpu_count: self.vcpu_count.unwrap_or(base.vcpu_count),
            mem_size_mib: self.mem_size_mib.unwrap_or(base.mem_size_mib),
            smt: self.smt.unwrap_or(base.smt),
            cpu_template: self
                .cpu_template
                .clone()
                .or_else(|| base.cpu_template.clone()),
            track_dirty_pages: self.track_dirty_pages.unwrap_or(base.track_dirty_pages),
            huge_pages: self.huge_pages.unwrap_or(base.huge_pages),
        }
    }
}

/// Firecracker's `huge_pages` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    #[default]
    None,
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// `PUT /boot-source`: the kernel, its command line and an optional initrd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
}

/// Firecracker's block cache modes: `Unsafe` ignores guest flushes, `Writeback` honours them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    #[default]
    Unsafe,
    Writeback,
}

/// Firecracker's block I/O engines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    #[default]
    Sync,
    Async,
}

/// vessel extension: the disk image format; detected from the content when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriveFormat {
    Raw,
    Qcow2,
    Vdi,
    /// VHD (qemu's `vpc`).
    #[serde(alias = "vpc")]
    Vhd,
    Vmdk,
    Vhdx,
}

/// Firecracker's token bucket: `size` tokens refilled every `refill_time` ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    pub refill_time: u64,
}

/// Firecracker's rate limiter: a bytes bucket and an operations bucket, both optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

/// `PUT /drives/{drive_id}`: a virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: String,
    pub is_root_device: bool,
    #[serde(default)]
    pub is_read_only: bool,
    /// Root partition UUID for `root=PARTUUID=`; meaningful with `is_root_device`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    #[serde(default)]
    pub cache_type: CacheType,
    #[serde(default)]
    pub io_engine: IoEngine,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    /// vessel extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DriveFormat>,
}

/// `PATCH /drives/{drive_id}` after boot: a new image behind the drive, new limits, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveUpdate {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    /// Buckets given replace the drive's; a bucket left out stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    /// vessel's extension, with `path_on_host` only: follow the backing files the new
    /// image names outside its directory (as `--disk …,allow-external-backing`), for an
    /// overlay the caller made itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_external_backing: Option<bool>,
}

/// `PATCH /network-interfaces/{iface_id}` after boot: new limits (buckets given replace
/// the interface's; a bucket left out stays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaceUpdate {
    pub iface_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

impl RateLimiter {
    /// `self` with the buckets `update` gives replaced.
    pub fn updated_by(self, update: &RateLimiter) -> RateLimiter {
        RateLimiter {
            bandwidth: update.bandwidth.or(self.bandwidth),
            ops: update.ops.or(self.ops),
        }
    }
}

/// vessel extension: how a network interface reaches the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A host tap device named by `host_dev_name` (Firecracker's only mode).
    Tap,
    /// User-mode NAT by the VMM; needs no host device.
    Nat,
    /// Several VMs behind one NAT, named by `network`.
    Natnet,
    /// A switch between VMs on the network named by `network` only.
    Internal,
    /// VMs and the host through the host bridge named by `network`.
    Hostonly,
    /// A tap enslaved to the existing host bridge named by `network`.
    Bridged,
}

impl NetworkMode {
    /// Whether the mode names a network (`network` field) rather than a host tap.
    pub fn needs_network(self) -> bool {
        !matches!(self, NetworkMode::Tap | NetworkMode::Nat)
    }
}

/// `PUT /network-interfaces/{iface_id}`: a virtio-net interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    pub iface_id: String,
    /// Host tap device; required unless `mode` is `nat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_dev_name: Option<String>,
    /// `xx:xx:xx:xx:xx:xx`; the VMM picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
    /// vessel extension; `tap` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<NetworkMode>,
    /// vessel extension: the network (natnet, internal, hostonly) or host bridge (bridged)
    /// of the modes that name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

impl NetworkInterface {
    /// The mode in force: `tap` unless the client asked otherwise.
    pub fn effective_mode(&self) -> NetworkMode {
        self.mode.unwrap_or(NetworkMode::Tap)
    }
}

/// `PUT /vsock`: a virtio-vsock device with Firecracker's host side (docs/vsock.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// Deprecated in Firecracker and optional; kept and shown when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
    /// The guest's context ID, at least 3.
    pub guest_cid: u32,
    /// The host's Unix socket; guest connections to host port P go to `<uds_path>_P`.
    pub uds_path: String,
}

/// `PUT /actions` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    pub action_type: ActionType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
}

/// `PATCH /vm` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateBody {
    pub state: VmStateTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmStateTarget {
    Paused,
    Resumed,
}

/// Where the microVM is in its life, as `GET /` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
}

/// `GET /` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    pub state: InstanceState,
    pub vmm_version: String,
    pub app_name: String,
}

/// `GET /version` answer: Firecracker's field plus vessel's own name for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub firecracker_version: String,
    pub vmm_version: String,
}

/// `GET /vm/config` answer, with Firecracker's key names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullVmConfig {
    #[serde(rename = "boot-source", skip_serializing_if = "Option::is_none")]
    pub boot_source: Option<BootSource>,
    pub drives: Vec<Drive>,
    #[serde(rename = "machine-config")]
    pub machine_config: MachineConfig,
    #[serde(rename = "network-interfaces")]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<Vsock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<crate::balloon_model::Balloon>,
    #[serde(
        rename = "mmds-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mmds_config: Option<crate::controller::mmds::MmdsConfig>,
}

/// The whole validated configuration handed to [`crate::VmmBackend::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfigSnapshot {
    pub machine: MachineConfig,
    pub boot_source: BootSource,
    /// In guest order: the root device (if any) first, then the others as they were added.
    pub drives: Vec<Drive>,
    pub network_interfaces: Vec<NetworkInterface>,
    pub vsock: Option<Vsock>,
    pub balloon: Option<crate::balloon_model::Balloon>,
    /// The metadata service and the NICs that reach it.
    pub mmds: Option<crate::controller::mmds::MmdsAttachment>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_config_defaults_fill_optional_fields() {
        let cfg: MachineConfig =
            serde_json::from_str(r#"{"vcpu_count": 2, "mem_size_mib": 256}"#).unwrap();
        assert_eq!(cfg.vcpu_count, 2);
        assert_eq!(cfg.mem_size_mib, 256);
        assert!(!cfg.smt);
        assert_eq!(cfg.huge_pages, HugePages::None);
        assert_eq!(cfg.mem_size_bytes(), 256 << 20);
    }

    #[test]
    fn machine_config_serializes_like_firecracker() {
        let json = serde_json::to_value(MachineConfig::default()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false,
                "track_dirty_pages": false, "huge_pages": "None"})
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<BootSource>(
            r#"{"kernel_image_path": "/k", "kernel_args": "x"}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `kernel_args`"),
            "{err}"
        );
    }

    #[test]
    fn drive_accepts_firecracker_optional_fields() {
        let drive: Drive = serde_json::from_str(
            r#"{"drive_id": "rootfs", "path_on_host": "/img", "is_root_device": true,
                "is_read_only": false, "partuuid": "abc", "cache_type": "Writeback",
                "io_engine": "Async", "format": "vpc",
                "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 2},
                                 "ops": {"size": 3, "one_time_burst": 4, "refill_time": 5}}}"#,
        )
        .unwrap();
        assert_eq!(drive.cache_type, CacheType::Writeback);
        assert_eq!(drive.io_engine, IoEngine::Async);
        assert_eq!(drive.format, Some(DriveFormat::Vhd));
        assert_eq!(
            drive.rate_limiter.unwrap().ops.unwrap().one_time_burst,
            Some(4)
        );
    }

    #[test]
    fn instance_state_names_match_firecracker() {
        assert_eq!(
            serde_json::to_string(&InstanceState::NotStarted).unwrap(),
            "\"Not started\""
        );
        assert_eq!(
            serde_json::to_string(&InstanceState::Paused).unwrap(),
            "\"Paused\""
        );
    }

    #[test]
    fn machine_config_update_keeps_unset_fields() {
        let update: MachineConfigUpdate = serde_json::from_str(r#"{"vcpu_count": 4}"#).unwrap();
        let base = MachineConfig {
            mem_size_mib: 512,
            ..MachineConfig::default()
        };
        let merged = update.apply_to(&base);
        assert_eq!(merged.vcpu_count, 4);
        assert_eq!(merged.mem_size_mib, 512);
    }
}
