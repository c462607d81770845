//! Live migration of a running VM to another vessel process (docs/migration.md): the
//! sender streams guest memory while the guest runs (pre-copy, dirty pages tracked by
//! KVM), then pauses it and sends the rest with the same state a snapshot saves; the
//! receiver builds the VM from that state and resumes it. The stream is a versioned,
//! framed format ([`wire`]) that the receiver reads as hostile input.

mod dirty;
mod disk_copy;
mod receive;
mod send;
mod storage;
mod transport;
pub mod wire;
mod worker;

pub use receive::{confirm_resumed, ready_and_wait_go, receive, refuse, Received};
pub use send::SendOptions;
pub use storage::{OpenTargets, Storage};
pub use transport::{Listener, MigrationUrl, Stream};
pub use worker::{MigrationControl, MigrationProgress, MigrationState};

pub(crate) use worker::spawn_worker;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("invalid migration URL '{0}': expected unix:PATH or tcp:HOST:PORT")]
    Url(String),
    #[error("{what} {url}: {source}")]
    Socket {
        what: &'static str,
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid machine in the migration stream: {0}")]
    Machine(String),
    #[error("the migration stream's machine has {memory} bytes of RAM, more than the {limit} this receiver accepts")]
    MemoryLimit { memory: u64, limit: u64 },
    #[error("cannot allocate {size} bytes of guest memory: {reason}")]
    Allocate { size: u64, reason: String },
    #[error("the migration stream writes {len} bytes at guest address {addr:#x}, outside the machine's RAM")]
    MemoryRange { addr: u64, len: u32 },
    #[error("the sender copies its disks (--copy-storage), but this receiver takes shared storage (the images it names, as they are); only `vessel start NAME --incoming URL --copy-storage` writes arriving disks, into the images its definition names")]
    UnexpectedDisks,
    #[error("this receiver waits for the sender's disks (--copy-storage), but the sender does not send them; migrate with --copy-storage, or start the receiver without it for shared storage")]
    NoDisks,
    #[error("copying the disks: {0}")]
    DiskCopy(String),
    #[error(
        "the migration stream writes {len} bytes at offset {offset} of disk {disk}, outside it"
    )]
    DiskRange { disk: u32, offset: u64, len: u64 },
    #[error("the state's machine is not the machine the stream announced first")]
    MachineMismatch,
    #[error("the receiver refused the migration: {0}")]
    Receiver(String),
    #[error("the sender gave up: {0}")]
    Sender(String),
    #[error("the receiver was told to resume but did not confirm it ({0}); this VM stays paused so that it never runs twice: check the receiver, and resume here only if it is not running")]
    Unconfirmed(String),
    #[error("cannot migrate this VM: {0}")]
    Unsupported(String),
    #[error("a migration of this VM is already in progress")]
    InProgress,
    #[error("the migration was cancelled")]
    Cancelled,
    #[error("the migration thread is gone (the VM is ending)")]
    WorkerGone,
    #[error("{what}: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
}
