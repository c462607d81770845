//! The seam between the API and the VMM: the API owns configuration and the instance state
//! machine, and asks the backend only to act on the VM.

use std::fs::File;
use std::os::fd::OwnedFd;

use crate::controller::logger::LoggerConfig;
use crate::forward_model::{LivePortForward, PortForward};
use crate::model::{
    Drive, DriveFormat, DriveUpdate, MachineConfig, NetworkInterfaceUpdate, VmConfigSnapshot,
};
use crate::snapshot_model::SnapshotCreateParams;

/// Why the VMM did not do what the API asked. Its text is what the client reads in
/// `fault_message` (Firecracker's wording where Firecracker has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// This VMM does not have the feature asked for.
    #[error("{0}")]
    Unsupported(&'static str),
    /// There is no running VM to act on (not started yet, or shutting down).
    #[error("{0}")]
    NotRunning(String),
    /// The VMM tried and failed; the text names the cause.
    #[error("{0}")]
    Failed(String),
}

/// A cause the VMM reports in words (its error chain).
impl From<String> for BackendError {
    fn from(message: String) -> Self {
        BackendError::Failed(message)
    }
}

/// What the API server needs from a VMM. Calls come one at a time (the API serializes them)
/// from a worker thread of the API server, never concurrently with each other. An `Err`
/// ([`BackendError`]) goes to the client in `fault_message`; the API state does not change.
pub trait VmmBackend: Send + Sync {
    /// Builds and starts the VM from `config`; returns once the vCPUs run (not when the guest
    /// exits). Called at most once successfully.
    fn start(&self, config: &VmConfigSnapshot) -> Result<(), BackendError>;

    /// Presses Ctrl+Alt+Del on the guest's i8042 keyboard (x86 guests reboot or shut down).
    fn send_ctrl_alt_del(&self) -> Result<(), BackendError>;

    /// Stops all vCPUs; returns once none runs guest code.
    fn pause(&self) -> Result<(), BackendError>;

    /// Lets paused vCPUs run again.
    fn resume(&self) -> Result<(), BackendError>;

    /// Writes out pending metrics (Firecracker's `FlushMetrics`). A VMM without a metrics
    /// sink keeps this default, which refuses like Firecracker does when metrics were never
    /// configured.
    fn flush_metrics(&self) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(
            "No metrics sink is configured, so there are no metrics to flush.",
        ))
    }

    /// `PATCH /drives/{id}` on the running VM: drive `index` (in the order of the
    /// configuration it started with) becomes `drive`; `update` says what changed (a new
    /// `path_on_host`, which the VMM opens and checks as at boot; the buckets its
    /// `rate_limiter` gives, which replace the drive's). Returns the new image's format.
    fn update_drive(
        &self,
        index: usize,
        drive: &Drive,
        update: &DriveUpdate,
    ) -> Result<Option<DriveFormat>, BackendError> {
        let _ = (index, drive, update);
        Err(BackendError::Unsupported(
            "This VMM cannot change drives after boot.",
        ))
    }

    /// `PATCH /network-interfaces/{id}`: the buckets `update` gives replace those of
    /// interface `index`.
    fn update_network_interface(
        &self,
        index: usize,
        update: &NetworkInterfaceUpdate,
    ) -> Result<(), BackendError> {
        let _ = (index, update);
        Err(BackendError::Unsupported(
            "This VMM cannot change network interfaces after boot.",
        ))
    }

    /// `PUT /logger`: log to `file` (standard error when `None`) as `config` says.
    fn configure_logger(
        &self,
        file: Option<File>,
        config: &LoggerConfig,
    ) -> Result<(), BackendError> {
        let _ = (file, config);
        Err(BackendError::Unsupported(
            "This VMM has no configurable logger.",
        ))
    }

    /// Writes a full snapshot of the paused VM (`PUT /snapshot/create`). The controller has
    /// checked that the VM is paused and the type is `Full`.
    fn create_snapshot(&self, params: &SnapshotCreateParams) -> Result<(), BackendError> {
        let _ = params;
        Err(BackendError::Unsupported(
            "This VMM does not support snapshots.",
        ))
    }

    /// Builds the VM from a snapshot (`PUT /snapshot/load`) before anything was configured,
    /// leaving it paused, or running when `resume` is set. Returns the machine the snapshot
    /// describes (what `GET /machine-config` shows from then on).
    fn load_snapshot(
        &self,
        snapshot_path: &str,
        mem_path: &str,
        resume: bool,
    ) -> Result<MachineConfig, BackendError> {
        let _ = (snapshot_path, mem_path, resume);
        Err(BackendError::Unsupported(
            "This VMM does not support snapshots.",
        ))
    }

    /// Migrates the running VM to the receiver at `params.destination_url`; returns once
    /// the receiver runs it (this VMM then ends) or with the reason it failed (the VM goes
    /// on here unless the error says otherwise).
    fn send_migration(&self, params: &crate::MigrationSendParams) -> Result<(), BackendError> {
        let _ = params;
        Err(BackendError::Unsupported(
            "This VMM does not support live migration.",
        ))
    }

    /// Where the last migration stands (`GET /migration`), as JSON. Called without
    /// waiting for a migration in progress.
    fn migration_status(&self) -> Result<serde_json::Value, BackendError> {
        Err(BackendError::Unsupported(
            "This VMM does not support live migration.",
        ))
    }

    /// Cancels a migration in progress (`PUT /migration/cancel`); whether one was.
    /// Called without waiting for the migration.
    fn cancel_migration(&self) -> Result<bool, BackendError> {
        Err(BackendError::Unsupported(
            "This VMM does not support live migration.",
        ))
    }

    /// The running VM's balloon as `GET /balloon` shows it.
    fn balloon_config(&self) -> Result<crate::Balloon, BackendError> {
        Err(BackendError::Unsupported("No balloon device found."))
    }

    /// A new balloon target (`PATCH /balloon`); the controller checked it against memory.
    fn update_balloon(&self, amount_mib: u32) -> Result<(), BackendError> {
        let _ = amount_mib;
        Err(BackendError::Unsupported("No balloon device found."))
    }

    /// The balloon's size and the guest's last statistics (`GET /balloon/statistics`).
    fn balloon_statistics(&self) -> Result<crate::BalloonStatistics, BackendError> {
        Err(BackendError::Unsupported("No balloon device found."))
    }

    /// A new statistics polling interval (`PATCH /balloon/statistics`).
    fn update_balloon_statistics(&self, secs: u16) -> Result<(), BackendError> {
        let _ = secs;
        Err(BackendError::Unsupported("No balloon device found."))
    }

    /// Run-time port forwards of interface `index` (vessel's extension).
    fn forwards(&self, index: usize) -> Result<Vec<LivePortForward>, BackendError> {
        let _ = index;
        Err(BackendError::Unsupported(
            "This VMM has no run-time port forwards.",
        ))
    }

    /// Forwards `forward` on interface `index` from `listener`, a socket the client bound
    /// and listens on.
    fn add_forward(
        &self,
        index: usize,
        forward: &PortForward,
        listener: OwnedFd,
    ) -> Result<(), BackendError> {
        let _ = (index, forward, listener);
        Err(BackendError::Unsupported(
            "This VMM has no run-time port forwards.",
        ))
    }

    /// Removes interface `index`'s run-time forward on `host_port`.
    fn remove_forward(&self, index: usize, host_port: u16) -> Result<(), BackendError> {
        let _ = (index, host_port);
        Err(BackendError::Unsupported(
            "This VMM has no run-time port forwards.",
        ))
    }
}
