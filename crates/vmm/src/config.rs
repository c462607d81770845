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
