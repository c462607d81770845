//! What a VM is made of, as validated input to the VMM (the CLI and, later, the API and
//! VM definition files produce it).

use std::path::PathBuf;

/// Where the guest's serial console (COM1) goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialMode {
    /// Output to stdout; stdin (raw mode when it is a terminal) is the guest's input.
    Stdio,
    /// Output appended to a file; no input.
    File(PathBuf),
    /// Discarded.
    None,
    /// A background VM: output appended to `log` and copied to the client attached to the
    /// unix socket `socket`, whose input goes to the guest.
    Background { log: PathBuf, socket: PathBuf },
}

/// Whether the VM gets KVM's in-kernel i8254 PIT (and the port 0x61 speaker latch).
///
/// Linux does not use it on vessel's platform: with HW-reduced ACPI it skips the legacy
/// timers and PIC and takes its clock from kvmclock and the TSC-deadline LAPIC timer, as on
/// Cloud Hypervisor, which has no PIT at all. Creating the PIT costs KVM a kernel thread
/// (milliseconds at start-up and again at exit), so `Auto` gives it only to multiboot
/// kernels, the test and hobby kernels that program the PIT themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PitMode {
    #[default]
    Auto,
    On,
    Off,
}

impl PitMode {
    pub fn wanted(self, format: arch::boot::KernelFormat) -> bool {
        match self {
            PitMode::On => true,
            PitMode::Off => false,
            PitMode::Auto => format == arch::boot::KernelFormat::Multiboot,
        }
    }
}

/// A virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
    /// Serial number the guest reads with GET_ID (at most 20 bytes); `vessel-diskN` when unset.
    pub id: Option<String>,
    /// Image format; detected from the content when unset (and then guest writes that
    /// would make the content detect as another format are refused).
    pub format: Option<block::Format>,
    /// Follow backing files / parents / extents the image names by absolute paths or
    /// with `..` (`allow-external-backing`; see [`block::OpenOptions`]).
    pub allow_external_backing: bool,
    /// Offer VIRTIO_BLK_F_FLUSH and sync the image on the guest's FLUSH requests; `false` is
    /// Firecracker's `Unsafe` cache type (no flush offered, none done).
    pub honour_flush: bool,
    /// Bandwidth and request limits (`rate=`, `iops=`; Firecracker's `rate_limiter`).
    pub rate_limit: virtio::rate_limiter::Limits,
}

/// A virtio-vsock device with Firecracker's host side (docs/vsock.md).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VsockConfig {
    /// The guest's context ID (3 ..= 2^32 - 2).
    pub cid: u64,
    /// The host's Unix socket: clients connect here with `CONNECT <port>`; guest
    /// connections to host port P go to `<uds>_P`.
    pub uds: PathBuf,
}

/// The MMDS (Firecracker's metadata service) on some NICs: frames they send to `ipv4`
/// (ARP, TCP port 80) are answered by `service` instead of their backend.
#[derive(Debug, Clone)]
pub struct MmdsConfig {
    pub service: mmds::SharedMmds,
    pub ipv4: std::net::Ipv4Addr,
    /// Indices into [`VmConfig::nics`].
    pub nics: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// Guest RAM in bytes.
    pub memory: u64,
    pub cpus: u8,
    pub serial: SerialMode,
    pub disks: Vec<DiskConfig>,
    /// A virtio-rng device fed from the host's getrandom.
    pub rng: bool,
    /// A virtio-console whose output is appended to this file.
    pub console2: Option<PathBuf>,
    /// virtio-net interfaces, in PCI slot order after the disks.
    pub nics: Vec<net::NicConfig>,
    pub pit: PitMode,
    /// Whether vessel's instruction emulator stands in for KVM's (kvm_pvm hosts).
    pub emulator_fixups: crate::emulator_fixups::EmulatorFixups,
    /// A virtio-vsock device, after the consoles in PCI slot order.
    pub vsock: Option<VsockConfig>,
    /// Shared folders (virtio-fs, each served by its own virtiofsd), after vsock in PCI
    /// slot order; with any, guest memory is a shared memfd (docs/shared-folders.md).
    pub shares: Vec<vhost_user::fs::Share>,
    /// A virtio-balloon device, last in PCI slot order (docs/balloon.md).
    pub balloon: Option<virtio::balloon::BalloonConfig>,
    /// The metadata service on some of the NICs.
    pub mmds: Option<MmdsConfig>,
}

/// Most vCPUs vessel gives a VM: xAPIC ids are 8 bits and the IOAPIC takes one id.
pub const MAX_CPUS: u8 = 254;

/// Longest disk serial virtio-blk carries (GET_ID).
pub const MAX_DISK_ID_LEN: usize = 20;

/// Why a [`VmConfig`] describes no VM vessel builds.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid memory size: {0}")]
    Memory(#[from] arch::memory_map::MemoryMapError),
    #[error("{0} vCPUs: a VM has 1 to {MAX_CPUS}")]
    Cpus(u8),
    #[error("disk id '{0}' is longer than the {MAX_DISK_ID_LEN} bytes virtio-blk allows")]
    DiskId(String),
    #[error("network interface {index}: {source}")]
    Nic {
        index: usize,
        #[source]
        source: net::ConfigError,
    },
    #[error("the MMDS names network interface {0}, which the VM does not have")]
    MmdsNic(usize),
    #[error("vsock: {0}")]
    Vsock(#[from] virtio::vsock::VsockError),
}

impl VmConfig {
    /// A VM of `memory` bytes and `cpus` vCPUs booting `kernel` with an empty command line,
    /// no initrd, no devices and no serial console; callers set the rest.
    pub fn new(kernel: PathBuf, memory: u64, cpus: u8) -> Self {
        VmConfig {
            kernel,
            initrd: None,
            cmdline: String::new(),
            memory,
            cpus,
            serial: SerialMode::None,
            disks: Vec::new(),
            rng: false,
            console2: None,
            nics: Vec::new(),
            pit: PitMode::Auto,
            emulator_fixups: Default::default(),
            vsock: None,
            shares: Vec::new(),
            balloon: None,
            mmds: None,
        }
    }

    /// The rules every VM follows, whoever described it (command line, VM definition,
    /// API, snapshot): memory size, vCPU count, disk ids, each NIC's own rules, the MMDS's
    /// NICs, the vsock CID and socket path. Host limits (KVM's vCPU maximum, files that
    /// must exist) are checked when the VM is built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        arch::memory_map::check_size(self.memory)?;
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(ConfigError::Cpus(self.cpus));
        }
        if let Some(id) = self
            .disks
            .iter()
            .filter_map(|d| d.id.as_ref())
            .find(|id| id.len() > MAX_DISK_ID_LEN)
        {
            return Err(ConfigError::DiskId(id.clone()));
        }
        for (index, nic) in self.nics.iter().enumerate() {
            nic.validate()
                .map_err(|source| ConfigError::Nic { index, source })?;
        }
        if let Some(&index) = self
            .mmds
            .iter()
            .flat_map(|m| &m.nics)
            .find(|&&i| i >= self.nics.len())
        {
            return Err(ConfigError::MmdsNic(index));
        }
        if let Some(v) = &self.vsock {
            virtio::vsock::check_config(v.cid, &v.uds)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_vm() -> VmConfig {
        VmConfig {
            nics: vec![net::parse_nic("nat").unwrap()],
            ..VmConfig::new("/k".into(), 64 << 20, 1)
        }
    }

    fn refusal(change: impl FnOnce(&mut VmConfig)) -> String {
        let mut cfg = small_vm();
        change(&mut cfg);
        cfg.validate().unwrap_err().to_string()
    }

    #[test]
    fn each_rule_is_named_when_broken() {
        assert!(small_vm().validate().is_ok());
        assert!(refusal(|c| c.memory = 1 << 20).contains("at least 2M"));
        assert!(refusal(|c| c.memory = (64 << 20) + 512).contains("4 KiB"));
        assert!(refusal(|c| c.cpus = 0).contains("1 to 254"));
        assert!(refusal(|c| c.cpus = 255).contains("255 vCPUs"));
        let long_id = |c: &mut VmConfig| {
            c.disks.push(DiskConfig {
                path: "/d".into(),
                read_only: false,
                id: Some("x".repeat(21)),
                format: None,
                allow_external_backing: false,
                honour_flush: true,
                rate_limit: Default::default(),
            })
        };
        assert!(refusal(long_id).contains("20 bytes"));
        let bad_nic = |c: &mut VmConfig| c.nics[0].mode = net::NicMode::Tap("a/b".into());
        assert!(refusal(bad_nic).contains("network interface 0"));
        let vsock = |c: &mut VmConfig| {
            c.vsock = Some(VsockConfig {
                cid: 2,
                uds: "/run/v.sock".into(),
            })
        };
        assert!(refusal(vsock).starts_with("vsock"));
    }
}
