//! What a VM is made of, as validated input to the VMM (the CLI and, later, the API and
//! VM definition files produce it).

use std::path::PathBuf;

/// Where the guest's serial console (COM1) goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SerialMode {
    /// Output to stdout; stdin (raw mode when it is a terminal) is the guest's input.
    Stdio,
    /// Output appended to a file; no input.
    File(PathBuf),
    /// Discarded.
    #[default]
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

/// What a VM boots: its kernel, initrd and command line. A VM that comes back from saved
/// state (a snapshot, a migration, a resume) boots nothing and has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSource {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
}

/// The machine's shape: what the guest sees and a snapshot or a migration stream
/// records — its RAM, vCPUs, PIT and devices, each device with the host file or network
/// backend that serves it (those are reopened, and reconnected, where the VM comes back;
/// docs/snapshots.md). A restored VM's machine is the saved one.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// Guest RAM in bytes.
    pub memory: u64,
    pub cpus: u8,
    pub pit: PitMode,
    pub disks: Vec<DiskConfig>,
    /// A virtio-rng device fed from the host's getrandom.
    pub rng: bool,
    /// A virtio-console whose output is appended to this file.
    pub console2: Option<PathBuf>,
    /// virtio-net interfaces, in PCI slot order after the disks.
    pub nics: Vec<net::NicConfig>,
    /// A virtio-vsock device, after the consoles in PCI slot order.
    pub vsock: Option<VsockConfig>,
    /// Shared folders (virtio-fs, each served by its own virtiofsd), after vsock in PCI
    /// slot order; with any, guest memory is a shared memfd (docs/shared-folders.md).
    pub shares: Vec<vhost_user::fs::Share>,
    /// A virtio-balloon device, last in PCI slot order (docs/balloon.md).
    pub balloon: Option<virtio::balloon::BalloonConfig>,
}

/// What the host running the VM decides, whatever the machine: where COM1 goes, whether
/// vessel's instruction emulator stands in for KVM's, and the metadata service. Never
/// saved: each start, restore or migration receiver gives its own.
#[derive(Debug, Clone, Default)]
pub struct HostResources {
    pub serial: SerialMode,
    /// Whether vessel's instruction emulator stands in for KVM's (kvm_pvm hosts).
    pub emulator_fixups: crate::emulator_fixups::EmulatorFixups,
    /// The metadata service on some of the NICs.
    pub mmds: Option<MmdsConfig>,
    /// For a VM built from saved state: the disks (by path) whose images may follow
    /// backing files outside their own directory (a snapshot cannot grant it; a resumed
    /// VM's definition does). A booted VM's disks carry their own
    /// [`DiskConfig::allow_external_backing`].
    pub backing_grants: Vec<PathBuf>,
    /// For a VM built from saved state: its shares with their host directories (a resumed
    /// or arriving VM's definition gives them; a state file never names a directory). A
    /// booted VM's shares are [`MachineConfig::shares`].
    pub shares: Vec<vhost_user::fs::Share>,
}

/// A VM as the VMM builds it: what it boots (nothing when it comes from saved state), the
/// machine's shape, and the host's resources. Every front end (command line, VM
/// definition, API, snapshot) produces one, checked by [`VmConfig::validate`].
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub boot: Option<BootSource>,
    pub machine: MachineConfig,
    pub host: HostResources,
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

impl MachineConfig {
    /// A machine of `memory` bytes and `cpus` vCPUs without devices; callers add them.
    pub fn new(memory: u64, cpus: u8) -> Self {
        MachineConfig {
            memory,
            cpus,
            pit: PitMode::Auto,
            disks: Vec::new(),
            rng: false,
            console2: None,
            nics: Vec::new(),
            vsock: None,
            shares: Vec::new(),
            balloon: None,
        }
    }
}

impl BootSource {
    /// `kernel` with an empty command line and no initrd.
    pub fn kernel(kernel: PathBuf) -> Self {
        BootSource {
            kernel,
            initrd: None,
            cmdline: String::new(),
        }
    }
}

impl VmConfig {
    /// A VM of `memory` bytes and `cpus` vCPUs booting `kernel` with an empty command line,
    /// no initrd, no devices and no serial console; callers set the rest.
    pub fn new(kernel: PathBuf, memory: u64, cpus: u8) -> Self {
        VmConfig {
            boot: Some(BootSource::kernel(kernel)),
            machine: MachineConfig::new(memory, cpus),
            host: HostResources::default(),
        }
    }

    /// The rules every VM follows, whoever described it (command line, VM definition,
    /// API, snapshot): memory size, vCPU count, disk ids, each NIC's own rules, the MMDS's
    /// NICs, the vsock CID and socket path. Host limits (KVM's vCPU maximum, files that
    /// must exist) are checked when the VM is built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.machine;
        arch::memory_map::check_size(m.memory)?;
        if m.cpus == 0 || m.cpus > MAX_CPUS {
            return Err(ConfigError::Cpus(m.cpus));
        }
        if let Some(id) = m
            .disks
            .iter()
            .filter_map(|d| d.id.as_ref())
            .find(|id| id.len() > MAX_DISK_ID_LEN)
        {
            return Err(ConfigError::DiskId(id.clone()));
        }
        for (index, nic) in m.nics.iter().enumerate() {
            nic.validate()
                .map_err(|source| ConfigError::Nic { index, source })?;
        }
        if let Some(&index) = self
            .host
            .mmds
            .iter()
            .flat_map(|mmds| &mmds.nics)
            .find(|&&i| i >= m.nics.len())
        {
            return Err(ConfigError::MmdsNic(index));
        }
        if let Some(v) = &m.vsock {
            virtio::vsock::check_config(v.cid, &v.uds)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_vm() -> VmConfig {
        let mut cfg = VmConfig::new("/k".into(), 64 << 20, 1);
        cfg.machine.nics = vec![net::parse_nic("nat").unwrap()];
        cfg
    }

    fn refusal(change: impl FnOnce(&mut VmConfig)) -> String {
        let mut cfg = small_vm();
        change(&mut cfg);
        cfg.validate().unwrap_err().to_string()
    }

    #[test]
    fn each_rule_is_named_when_broken() {
        assert!(small_vm().validate().is_ok());
        assert!(refusal(|c| c.machine.memory = 1 << 20).contains("at least 2M"));
        assert!(refusal(|c| c.machine.memory = (64 << 20) + 512).contains("4 KiB"));
        assert!(refusal(|c| c.machine.cpus = 0).contains("1 to 254"));
        assert!(refusal(|c| c.machine.cpus = 255).contains("255 vCPUs"));
        let long_id = |c: &mut VmConfig| {
            c.machine.disks.push(DiskConfig {
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
        let bad_nic = |c: &mut VmConfig| c.machine.nics[0].mode = net::NicMode::Tap("a/b".into());
        assert!(refusal(bad_nic).contains("network interface 0"));
        let vsock = |c: &mut VmConfig| {
            c.machine.vsock = Some(VsockConfig {
                cid: 2,
                uds: "/run/v.sock".into(),
            })
        };
        assert!(refusal(vsock).starts_with("vsock"));
    }
}
