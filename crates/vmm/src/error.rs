//! Why building or running a VM failed: one error type for the builder, the device
//! manager and the run loop, each variant naming what was being done.

use kvm_ioctls::Cap;

use crate::vcpu;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0} (is KVM available and accessible to this user?)")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM lacks a capability vessel needs: {0:?}")]
    MissingCapability(Cap),
    #[error("{what}: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("{cpus} vCPUs requested but this host's KVM allows at most {max}")]
    TooManyCpus { cpus: u8, max: usize },
    #[error("invalid memory size: {0}")]
    Memory(#[from] arch::memory_map::MemoryMapError),
    #[error("cannot allocate {size} bytes of guest memory: {source}")]
    GuestMemory {
        size: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is a {kind}, not a regular file")]
    NotRegularFile {
        what: &'static str,
        path: std::path::PathBuf,
        kind: &'static str,
    },
    #[error("{what} {path} is {size} bytes, more than the {limit} bytes allowed")]
    BootFileTooLarge {
        what: &'static str,
        path: std::path::PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("cannot open serial output {path}: {source}")]
    SerialFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the VM has no kernel to boot")]
    NoBootSource,
    #[error(transparent)]
    Boot(#[from] arch::boot::BootError),
    #[error(transparent)]
    Acpi(#[from] arch::acpi::AcpiError),
    #[error(transparent)]
    MpTable(#[from] arch::mptable::MpTableError),
    #[error(transparent)]
    Vcpu(#[from] vcpu::VcpuError),
    #[error("device set-up: {0}")]
    Bus(#[from] devices::BusError),
    #[error("disk {path}: {source}")]
    Disk {
        path: std::path::PathBuf,
        #[source]
        source: block::Error,
    },
    #[error("{0}")]
    RateLimiter(#[source] virtio::rate_limiter::RateLimiterError),
    #[error("disk {path}: its size ({size} bytes) is not a multiple of 512-byte sectors")]
    DiskSize { path: std::path::PathBuf, size: u64 },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("network interface {index} ({mode}): {source}")]
    Nic {
        index: usize,
        mode: String,
        #[source]
        source: net::NetError,
    },
    #[error("cannot open console output {path}: {source}")]
    ConsoleFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vsock: {0}")]
    Vsock(#[source] virtio::vsock::VsockError),
    #[error("shared folder: {0}")]
    Shares(#[from] crate::shares::SharesError),
    #[error("shared guest memory for shared folders: {0}")]
    SharedMemory(#[from] crate::shared_memory::SharedMemoryError),
    #[error("balloon: {0}")]
    Balloon(String),
    #[error("PCI: {0}")]
    Pci(#[from] crate::device_manager::pci::PciSetupError),
    #[error(transparent)]
    EventLoop(#[from] crate::event_loop::EventLoopError),
    #[error("snapshot: {0}")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

pub(crate) fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> VmError {
    move |source| VmError::Io { what, source }
}
