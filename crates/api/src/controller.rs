//! The microVM's configuration and life-cycle state machine, as Firecracker runs it: devices and
//! machine settings are configured before `InstanceStart`, after which only actions on the
//! running VM (pause, resume, Ctrl+Alt+Del, snapshots, patches of drives and network
//! interfaces) are accepted.

use std::sync::Arc;

use thiserror::Error;

use crate::backend::VmmBackend;
use crate::balloon_model::Balloon;
use crate::model::{
    ActionType, BootSource, Drive, DriveUpdate, FullVmConfig, InstanceInfo, InstanceState,
    MachineConfig, MachineConfigUpdate, NetworkInterface, NetworkInterfaceUpdate, VersionInfo,
    VmConfigSnapshot, VmStateTarget, Vsock,
};
use crate::snapshot_model::{SnapshotCreateParams, SnapshotLoadParams};
use crate::validate::{validate_boot_source, validate_machine_config, ValidationError};

/// Most drives a VM can be given through the API.
pub const MAX_DRIVES: usize = 64;
/// Most network interfaces a VM can be given through the API.
pub const MAX_NETWORK_INTERFACES: usize = 32;

/// A request the router understood, ready for the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRequest {
    GetInstanceInfo,
    GetVersion,
    GetMachineConfig,
    GetVmConfig,
    PutMachineConfig(MachineConfig),
    PatchMachineConfig(MachineConfigUpdate),
    PutBootSource(BootSource),
    PutDrive(Drive),
    PutNetworkInterface(NetworkInterface),
    PutVsock(Vsock),
    PutMetrics(metrics::MetricsConfig),
    PutLogger(logger::LoggerConfig),
    PatchDrive(DriveUpdate),
    PatchNetworkInterface(NetworkInterfaceUpdate),
    Action(ActionType),
    PatchVmState(VmStateTarget),
    CreateSnapshot(SnapshotCreateParams),
    LoadSnapshot(SnapshotLoadParams),
    Balloon(balloon::BalloonRequest),
    GetMmds,
    PutMmds(serde_json::Value),
    PatchMmds(serde_json::Value),
    PutMmdsConfig(mmds::MmdsConfig),
    Forward(forwards::ForwardRequest),
    SendMigration(crate::migration_model::MigrationSendParams),
    GetMigration,
    CancelMigration,
}

/// A successful answer: `204 No Content`, or `200 OK` with a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiReply {
    NoContent,
    Json(Vec<u8>),
}

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("The requested operation is not supported after starting the microVM.")]
    NotSupportedPostBoot,
    #[error("The requested operation is not supported before starting the microVM.")]
    NotSupportedPreBoot,
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("A root block device already exists!")]
    RootDeviceExists,
    #[error("Too many drives: a microVM can have at most {MAX_DRIVES}.")]
    TooManyDrives,
    #[error("Too many network interfaces: a microVM can have at most {MAX_NETWORK_INTERFACES}.")]
    TooManyNetworkInterfaces,
    #[error("The host device name {0} is already in use.")]
    HostDevNameInUse(String),
    #[error("The MAC address is already in use: {0}.")]
    GuestMacInUse(String),
    #[error("Cannot start microvm without kernel configuration.")]
    MissingKernelConfig,
    #[error("Failed to start the microVM: {0}")]
    Start(crate::BackendError),
    #[error("Failed to send Ctrl+Alt+Del: {0}")]
    SendCtrlAltDel(crate::BackendError),
    #[error("Failed to pause the microVM: {0}")]
    Pause(crate::BackendError),
    #[error("Failed to resume the microVM: {0}")]
    Resume(crate::BackendError),
    #[error("Failed to flush metrics: {0}")]
    FlushMetrics(crate::BackendError),
    #[error("{0}")]
    Snapshot(#[from] snapshot::SnapshotRequestError),
    #[error("{0}")]
    Vsock(#[from] vsock::VsockRequestError),
    #[error("{0}")]
    Balloon(#[from] balloon::BalloonRequestError),
    #[error("{0}")]
    Metrics(#[from] metrics::MetricsError),
    #[error("{0}")]
    Logger(#[from] logger::LoggerError),
    #[error("{0}")]
    Patch(#[from] patch::PatchError),
    #[error("{0}")]
    Mmds(#[from] mmds::MmdsRequestError),
    #[error("{0}")]
    Forward(#[from] forwards::ForwardRequestError),
    #[error("{0}")]
    Migration(#[from] migration::MigrationRequestError),
    #[error("Failed to encode the response: {0}")]
    Encode(#[from] serde_json::Error),
}

pub(crate) mod balloon;
mod devices;
pub(crate) mod forwards;
pub(crate) mod logger;
pub(crate) mod metrics;
pub(crate) mod migration;
pub(crate) mod mmds;
mod output_file;
mod patch;
mod snapshot;
mod vsock;

impl ControlError {
    /// The HTTP status of the fault: `413` for an MMDS document over its limit, `400`
    /// otherwise.
    pub fn status_code(&self) -> u16 {
        match self {
            ControlError::Mmds(mmds::MmdsRequestError::LimitExceeded(_)) => 413,
            _ => 400,
        }
    }
}

/// Who this VMM says it is in `GET /` and `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceIdentity {
    pub id: String,
    pub vmm_version: String,
    pub app_name: String,
}

impl Default for InstanceIdentity {
    fn default() -> Self {
        InstanceIdentity {
            id: "anonymous-instance".to_string(),
            vmm_version: env!("CARGO_PKG_VERSION").to_string(),
            app_name: "vessel".to_string(),
        }
    }
}

/// The configuration gathered so far and the instance state; owns the backend.
pub struct VmController {
    identity: InstanceIdentity,
    state: InstanceState,
    machine: MachineConfig,
    boot_source: Option<BootSource>,
    drives: Vec<Drive>,
    network_interfaces: Vec<NetworkInterface>,
    vsock: Option<Vsock>,
    balloon: Option<Balloon>,
    metrics: Option<metrics::MetricsSink>,
    /// Whether `PUT /logger` succeeded (it is accepted once).
    logger_configured: bool,
    /// The metadata service, made on the first MMDS request.
    mmds: Option<::mmds::SharedMmds>,
    mmds_config: Option<mmds::MmdsConfig>,
    mmds_size_limit: usize,
    backend: Arc<dyn VmmBackend>,
}

impl VmController {
    pub fn new(identity: InstanceIdentity, backend: Arc<dyn VmmBackend>) -> Self {
        VmController {
            identity,
            state: InstanceState::NotStarted,
            machine: MachineConfig::default(),
            boot_source: None,
            drives: Vec::new(),
            network_interfaces: Vec::new(),
            vsock: None,
            balloon: None,
            metrics: None,
            logger_configured: false,
            mmds: None,
            mmds_config: None,
            mmds_size_limit: ::mmds::DEFAULT_SIZE_LIMIT,
            backend,
        }
    }

    /// A controller for a VM that already runs with `config`.
    pub fn running(
        identity: InstanceIdentity,
        backend: Arc<dyn VmmBackend>,
        config: VmConfigSnapshot,
    ) -> Self {
        VmController {
            identity,
            state: InstanceState::Running,
            machine: config.machine,
            boot_source: Some(config.boot_source),
            drives: config.drives,
            network_interfaces: config.network_interfaces,
            vsock: config.vsock,
            balloon: config.balloon,
            metrics: None,
            logger_configured: false,
            mmds: config.mmds.as_ref().map(|m| m.service.clone()),
            mmds_config: None,
            mmds_size_limit: ::mmds::DEFAULT_SIZE_LIMIT,
            backend,
        }
    }

    /// The largest MMDS document accepted (Firecracker's `--mmds-size-limit`); before any
    /// MMDS request.
    pub fn set_mmds_size_limit(&mut self, limit: usize) {
        self.mmds_size_limit = limit;
    }

    pub fn state(&self) -> InstanceState {
        self.state
    }

    /// The configuration as `GET /vm/config` shows it.
    pub fn full_config(&self) -> FullVmConfig {
        FullVmConfig {
            boot_source: self.boot_source.clone(),
            drives: self.drives.clone(),
            machine_config: self.machine.clone(),
            network_interfaces: self.network_interfaces.clone(),
            vsock: self.vsock.clone(),
            balloon: self.balloon.clone(),
            mmds_config: self.mmds_config.clone(),
        }
    }

    /// Carries out one request.
    pub fn handle(&mut self, request: ApiRequest) -> Result<ApiReply, ControlError> {
        let metric = metrics::metric_name(&request);
        let result = self.dispatch(request);
        self.count_request(metric, result.is_err());
        result
    }

    fn dispatch(&mut self, request: ApiRequest) -> Result<ApiReply, ControlError> {
        match request {
            ApiRequest::GetInstanceInfo => json(&InstanceInfo {
                id: self.identity.id.clone(),
                state: self.state,
                vmm_version: self.identity.vmm_version.clone(),
                app_name: self.identity.app_name.clone(),
            }),
            ApiRequest::GetVersion => json(&VersionInfo {
                firecracker_version: self.identity.vmm_version.clone(),
                vmm_version: self.identity.vmm_version.clone(),
            }),
            ApiRequest::GetMachineConfig => json(&self.machine),
            ApiRequest::GetVmConfig => json(&self.full_config()),
            ApiRequest::PutMachineConfig(cfg) => self.set_machine_config(cfg),
            ApiRequest::PatchMachineConfig(update) => {
                let merged = update.apply_to(&self.machine);
                self.set_machine_config(merged)
            }
            ApiRequest::PutBootSource(boot) => self.set_boot_source(boot),
            ApiRequest::PutDrive(drive) => self.insert_drive(drive),
            ApiRequest::PutNetworkInterface(iface) => self.insert_network_interface(iface),
            ApiRequest::PutVsock(vsock) => self.set_vsock(vsock),
            ApiRequest::Action(ActionType::InstanceStart) => self.start(),
            ApiRequest::Action(ActionType::SendCtrlAltDel) => {
                self.require_started()?;
                self.backend
                    .send_ctrl_alt_del()
                    .map_err(ControlError::SendCtrlAltDel)?;
                Ok(ApiReply::NoContent)
            }
            ApiRequest::Action(ActionType::FlushMetrics) => self.flush_metrics(),
            ApiRequest::PutMetrics(config) => self.set_metrics(&config),
            ApiRequest::PutLogger(config) => self.set_logger(&config),
            ApiRequest::PatchDrive(update) => self.patch_drive(update),
            ApiRequest::PatchNetworkInterface(update) => self.patch_network_interface(update),
            ApiRequest::PatchVmState(target) => self.change_vm_state(target),
            ApiRequest::CreateSnapshot(params) => self.create_snapshot(&params),
            ApiRequest::LoadSnapshot(params) => self.load_snapshot(&params),
            ApiRequest::Balloon(request) => self.balloon_request(request),
            ApiRequest::GetMmds => self.get_mmds(),
            ApiRequest::PutMmds(data) => self.put_mmds(data),
            ApiRequest::PatchMmds(patch) => self.patch_mmds(&patch),
            ApiRequest::PutMmdsConfig(config) => self.set_mmds_config(config),
            ApiRequest::Forward(request) => self.forward_request(request, None),
            ApiRequest::SendMigration(params) => self.send_migration(&params),
            ApiRequest::GetMigration => migration::migration_status(self.backend.as_ref()),
            ApiRequest::CancelMigration => migration::cancel_migration(self.backend.as_ref()),
        }
    }

    fn require_not_started(&self) -> Result<(), ControlError> {
        match self.state {
            InstanceState::NotStarted => Ok(()),
            InstanceState::Running | InstanceState::Paused => {
                Err(ControlError::NotSupportedPostBoot)
            }
        }
    }

    fn require_started(&self) -> Result<(), ControlError> {
        match self.state {
            InstanceState::NotStarted => Err(ControlError::NotSupportedPreBoot),
            InstanceState::Running | InstanceState::Paused => Ok(()),
        }
    }

    fn set_machine_config(&mut self, cfg: MachineConfig) -> Result<ApiReply, ControlError> {
        self.require_not_started()?;
        validate_machine_config(&cfg)?;
        self.machine = cfg;
        Ok(ApiReply::NoContent)
    }

    fn set_boot_source(&mut self, boot: BootSource) -> Result<ApiReply, ControlError> {
        self.require_not_started()?;
        validate_boot_source(&boot)?;
        self.boot_source = Some(boot);
        Ok(ApiReply::NoContent)
    }

    fn start(&mut self) -> Result<ApiReply, ControlError> {
        self.require_not_started()?;
        let boot_source = self
            .boot_source
            .clone()
            .ok_or(ControlError::MissingKernelConfig)?;
        let snapshot = VmConfigSnapshot {
            machine: self.machine.clone(),
            boot_source,
            drives: self.drives.clone(),
            network_interfaces: self.network_interfaces.clone(),
            vsock: self.vsock.clone(),
            balloon: self.balloon.clone(),
            mmds: self.mmds_attachment(),
        };
        self.backend.start(&snapshot).map_err(ControlError::Start)?;
        self.state = InstanceState::Running;
        Ok(ApiReply::NoContent)
    }

    /// Pausing a paused VM or resuming a running one succeeds without asking the backend.
    fn change_vm_state(&mut self, target: VmStateTarget) -> Result<ApiReply, ControlError> {
        self.require_started()?;
        match (target, self.state) {
            (VmStateTarget::Paused, InstanceState::Running) => {
                self.backend.pause().map_err(ControlError::Pause)?;
                self.state = InstanceState::Paused;
            }
            (VmStateTarget::Resumed, InstanceState::Paused) => {
                self.backend.resume().map_err(ControlError::Resume)?;
                self.state = InstanceState::Running;
            }
            _ => {}
        }
        Ok(ApiReply::NoContent)
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<ApiReply, ControlError> {
    Ok(ApiReply::Json(serde_json::to_vec(value)?))
}

#[cfg(test)]
mod tests;
