//! Snapshots of a running VM (Firecracker's `PUT /snapshot/create` and `/snapshot/load`): a
//! versioned JSON state file (machine shape, vCPUs, in-kernel irqchip/PIT/clock, legacy
//! devices) and a raw file with guest RAM. Only full snapshots of paused VMs are taken, and
//! with every device saved: each virtio device model implements `virtio::Persist` next to
//! its model; NIC backends and the console's output are opened again on load
//! (docs/snapshots.md has the rules).

mod bytes;
mod create;
mod devices;
mod memory;
mod output;
pub(crate) mod restore_model;
mod saved_config;
mod saved_nic;
mod state_file;
mod vcpu_state;
mod vm_state;

pub use create::SnapshotSource;
pub use devices::DeviceStates;
pub(crate) use memory::save_memory;
pub use memory::{restore_memory, restore_shared_memory, CopyReason, MemoryLoad, MEMORY_LOAD_ENV};
pub(crate) use saved_config::machine_state;
pub use saved_config::restored_config;
pub use saved_nic::{
    console_path, effective_mac, with_nic_macs, SavedForward, SavedNic, SavedNicMode,
};
pub use state_file::{
    parse_state, read_state_file, write_state_file, MachineState, SavedDisk, SavedShare,
    VmSnapshot, SNAPSHOT_VERSION,
};
pub use vcpu_state::VcpuState;
pub use vm_state::VmState;

pub(crate) use vcpu_state::{restore_vcpu, save_vcpu};

/// A valid state (2 vCPUs, 128 MiB, no virtio device) for other modules' tests.
#[cfg(test)]
pub(crate) use state_file::tests::sample as sample_state;

/// What a snapshot operation reports back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotReport {
    /// Bytes of guest memory written or read.
    pub memory_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the VM must be paused before a snapshot is created")]
    NotPaused,
    #[error("cannot snapshot this VM: its {0} device's state is not saved by vessel snapshots")]
    UnsupportedDevice(String),
    #[error("vCPU {id}: {what}: {source}")]
    VcpuKvm {
        id: usize,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("{what}: {source}")]
    VmKvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {id}: KVM accepted only {set} of {total} MSRs")]
    Msrs { id: usize, set: usize, total: usize },
    #[error("vCPU {0}: its XSAVE area is larger than the 4096 bytes vessel saves")]
    XsaveTooLarge(usize),
    #[error("the vCPUs did not answer the snapshot request: {0}")]
    Vcpus(String),
    #[error("{0}: already exists (a symlink counts); snapshot files are always created new, never overwritten: choose a path that does not exist")]
    OutputExists(std::path::PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid snapshot state file: {0}")]
    Invalid(String),
    #[error("snapshot state file version {found} is not supported (this vessel reads version {SNAPSHOT_VERSION})")]
    Version { found: u32 },
    #[error("memory file {path}: {reason}")]
    MemoryFile {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("the memory file is {file} bytes but the snapshot's VM has {expected} bytes of RAM")]
    MemorySize { file: u64, expected: u64 },
    #[error("virtio function {slot}: {source}")]
    VirtioDevice {
        slot: usize,
        #[source]
        source: virtio::PersistError,
    },
    #[error("invalid snapshot state file: {0}")]
    LegacyDevice(#[from] ::devices::PersistError),
    #[error(
        "the VM's state is {size} bytes, more than the {max} a state file may hold (vessel \
         could not load it back; the virtio-fs shares' virtiofsd states are most of it when \
         the guest holds many files open): nothing was written"
    )]
    StateTooLarge { size: u64, max: u64 },
    #[error("virtio function {slot}: {source}")]
    External {
        slot: usize,
        #[source]
        source: virtio::StateError,
    },
    #[error(
        "the saved VM has virtio-fs shares {saved}, the host side gives {given}: a VM with \
         shares is restored with its definition (vessel resume, vessel start --incoming, \
         vessel fork), which names the shares' directories again"
    )]
    Shares { saved: String, given: String },
}
