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
    Start(String),
    #[error("Failed to send Ctrl+Alt+Del: {0}")]
    SendCtrlAltDel(String),
    #[error("Failed to pause the microVM: {0}")]
    Pause(String),
    #[error("Failed to resume the microVM: {0}")]
    Resume(String),
    #[error("Failed to flush metrics: {0}")]
    FlushMetrics(String),
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
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::model::{CacheType, IoEngine, NetworkMode};

    /// Records calls; fails the ones named in `fail`.
    #[derive(Default)]
    struct RecordingBackend {
        calls: Mutex<Vec<String>>,
        started_with: Mutex<Option<VmConfigSnapshot>>,
        fail: Vec<&'static str>,
    }

    impl RecordingBackend {
        fn record(&self, name: &'static str) -> Result<(), String> {
            self.calls.lock().unwrap().push(name.to_string());
            if self.fail.contains(&name) {
                Err(format!("{name} refused by test"))
            } else {
                Ok(())
            }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl VmmBackend for RecordingBackend {
        fn start(&self, config: &VmConfigSnapshot) -> Result<(), String> {
            *self.started_with.lock().unwrap() = Some(config.clone());
            self.record("start")
        }
        fn send_ctrl_alt_del(&self) -> Result<(), String> {
            self.record("ctrl_alt_del")
        }
        fn pause(&self) -> Result<(), String> {
            self.record("pause")
        }
        fn resume(&self) -> Result<(), String> {
            self.record("resume")
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        file: String,
        backend: Arc<RecordingBackend>,
        controller: VmController,
    }

    fn fixture_with(backend: RecordingBackend) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        std::fs::write(&path, [0u8; 4096]).unwrap();
        let backend = Arc::new(backend);
        let controller = VmController::new(InstanceIdentity::default(), backend.clone());
        Fixture {
            file: path.to_str().unwrap().to_string(),
            _dir: dir,
            backend,
            controller,
        }
    }

    fn fixture() -> Fixture {
        fixture_with(RecordingBackend::default())
    }

    fn drive(id: &str, path: &str, root: bool) -> Drive {
        Drive {
            drive_id: id.into(),
            path_on_host: path.into(),
            is_root_device: root,
            is_read_only: false,
            partuuid: None,
            cache_type: CacheType::Unsafe,
            io_engine: IoEngine::Sync,
            rate_limiter: None,
            format: None,
        }
    }

    fn tap(id: &str, dev: &str, mac: Option<&str>) -> NetworkInterface {
        NetworkInterface {
            iface_id: id.into(),
            host_dev_name: Some(dev.into()),
            guest_mac: mac.map(str::to_string),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
            mode: None,
            network: None,
        }
    }

    fn boot(fx: &Fixture) -> BootSource {
        BootSource {
            kernel_image_path: fx.file.clone(),
            boot_args: Some("console=ttyS0".into()),
            initrd_path: None,
        }
    }

    fn info_state(controller: &mut VmController) -> String {
        let ApiReply::Json(body) = controller.handle(ApiRequest::GetInstanceInfo).unwrap() else {
            panic!("GET / must answer with JSON");
        };
        let info: InstanceInfo = serde_json::from_slice(&body).unwrap();
        serde_json::to_value(info.state)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn full_life_cycle() {
        let mut fx = fixture();
        let c = &mut fx.controller;
        assert_eq!(info_state(c), "Not started");
        let machine = MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 256,
            ..MachineConfig::default()
        };
        c.handle(ApiRequest::PutMachineConfig(machine.clone()))
            .unwrap();
        let boot_source = BootSource {
            kernel_image_path: fx.file.clone(),
            boot_args: None,
            initrd_path: None,
        };
        c.handle(ApiRequest::PutBootSource(boot_source.clone()))
            .unwrap();
        c.handle(ApiRequest::PutDrive(drive("rootfs", &fx.file, true)))
            .unwrap();
        c.handle(ApiRequest::Action(ActionType::InstanceStart))
            .unwrap();
        assert_eq!(info_state(c), "Running");
        c.handle(ApiRequest::PatchVmState(VmStateTarget::Paused))
            .unwrap();
        assert_eq!(info_state(c), "Paused");
        c.handle(ApiRequest::PatchVmState(VmStateTarget::Resumed))
            .unwrap();
        assert_eq!(info_state(c), "Running");
        c.handle(ApiRequest::Action(ActionType::SendCtrlAltDel))
            .unwrap();
        assert_eq!(
            fx.backend.calls(),
            ["start", "pause", "resume", "ctrl_alt_del"]
        );
        let started = fx.backend.started_with.lock().unwrap().clone().unwrap();
        assert_eq!(started.machine, machine);
        assert_eq!(started.boot_source, boot_source);
        assert_eq!(started.drives.len(), 1);
        assert_eq!(started.vsock, None);
    }

    #[test]
    fn vsock_is_configured_before_start_and_replaced_by_a_later_put() {
        let mut fx = fixture();
        let b = boot(&fx);
        let dir = tempfile::tempdir().unwrap();
        let vsock = |cid| crate::model::Vsock {
            vsock_id: Some("vsock0".into()),
            guest_cid: cid,
            uds_path: dir.path().join("v.sock").display().to_string(),
        };
        let c = &mut fx.controller;
        c.handle(ApiRequest::PutBootSource(b)).unwrap();
        assert!(c.handle(ApiRequest::PutVsock(vsock(2))).is_err());
        c.handle(ApiRequest::PutVsock(vsock(3))).unwrap();
        c.handle(ApiRequest::PutVsock(vsock(7))).unwrap();
        assert_eq!(c.full_config().vsock, Some(vsock(7)));
        c.handle(ApiRequest::Action(ActionType::InstanceStart))
            .unwrap();
        let started = fx.backend.started_with.lock().unwrap().clone().unwrap();
        assert_eq!(started.vsock, Some(vsock(7)));
    }

    #[test]
    fn configuration_is_refused_after_start() {
        let mut fx = fixture();
        let b = boot(&fx);
        let c = &mut fx.controller;
        c.handle(ApiRequest::PutBootSource(b.clone())).unwrap();
        c.handle(ApiRequest::Action(ActionType::InstanceStart))
            .unwrap();
        let refused = [
            ApiRequest::PutMachineConfig(MachineConfig::default()),
            ApiRequest::PatchMachineConfig(MachineConfigUpdate::default()),
            ApiRequest::PutBootSource(b),
            ApiRequest::PutDrive(drive("d", &fx.file, false)),
            ApiRequest::PutNetworkInterface(tap("eth0", "tap0", None)),
            ApiRequest::PutVsock(crate::model::Vsock {
                vsock_id: None,
                guest_cid: 3,
                uds_path: "/nonexistent/v.sock".into(),
            }),
            ApiRequest::Action(ActionType::InstanceStart),
        ];
        for request in refused {
            let err = c.handle(request.clone()).unwrap_err();
            assert!(
                matches!(err, ControlError::NotSupportedPostBoot),
                "{request:?}: {err}"
            );
        }
        assert_eq!(fx.backend.calls(), ["start"]);
        // Reads still work after start.
        assert!(c.handle(ApiRequest::GetMachineConfig).is_ok());
        assert!(c.handle(ApiRequest::GetVmConfig).is_ok());
    }

    #[test]
    fn runtime_actions_are_refused_before_start() {
        let mut fx = fixture();
        let c = &mut fx.controller;
        for request in [
            ApiRequest::Action(ActionType::SendCtrlAltDel),
            ApiRequest::PatchVmState(VmStateTarget::Paused),
            ApiRequest::PatchVmState(VmStateTarget::Resumed),
        ] {
            let err = c.handle(request).unwrap_err();
            assert!(matches!(err, ControlError::NotSupportedPreBoot), "{err}");
        }
        assert!(fx.backend.calls().is_empty());
    }

    #[test]
    fn start_needs_a_kernel() {
        let mut fx = fixture();
        let err = fx
            .controller
            .handle(ApiRequest::Action(ActionType::InstanceStart))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cannot start microvm without kernel configuration."
        );
        assert_eq!(fx.controller.state(), InstanceState::NotStarted);
        assert!(fx.backend.calls().is_empty());
    }

    #[test]
    fn failed_start_leaves_the_vm_configurable() {
        let mut fx = fixture_with(RecordingBackend {
            fail: vec!["start"],
            ..RecordingBackend::default()
        });
        let b = boot(&fx);
        let c = &mut fx.controller;
        c.handle(ApiRequest::PutBootSource(b)).unwrap();
        let err = c
            .handle(ApiRequest::Action(ActionType::InstanceStart))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Failed to start the microVM: start refused by test"
        );
        assert_eq!(c.state(), InstanceState::NotStarted);
        c.handle(ApiRequest::PutMachineConfig(MachineConfig::default()))
            .unwrap();
    }

    #[test]
    fn failed_pause_keeps_running() {
        let mut fx = fixture_with(RecordingBackend {
            fail: vec!["pause"],
            ..RecordingBackend::default()
        });
        let b = boot(&fx);
        let c = &mut fx.controller;
        c.handle(ApiRequest::PutBootSource(b)).unwrap();
        c.handle(ApiRequest::Action(ActionType::InstanceStart))
            .unwrap();
        assert!(matches!(
            c.handle(ApiRequest::PatchVmState(VmStateTarget::Paused)),
            Err(ControlError::Pause(_))
        ));
        assert_eq!(c.state(), InstanceState::Running);
    }

    #[test]
    fn repeated_pause_and_resume_do_not_reach_the_backend() {
        let mut fx = fixture();
        let b = boot(&fx);
        let c = &mut fx.controller;
        c.handle(ApiRequest::PutBootSource(b)).unwrap();
        c.handle(ApiRequest::Action(ActionType::InstanceStart))
            .unwrap();
        c.handle(ApiRequest::PatchVmState(VmStateTarget::Resumed))
            .unwrap();
        c.handle(ApiRequest::PatchVmState(VmStateTarget::Paused))
            .unwrap();
        c.handle(ApiRequest::PatchVmState(VmStateTarget::Paused))
            .unwrap();
        assert_eq!(c.state(), InstanceState::Paused);
        assert_eq!(fx.backend.calls(), ["start", "pause"]);
    }

    #[test]
    fn flush_metrics_uses_the_backend_default() {
        let mut fx = fixture();
        let err = fx
            .controller
            .handle(ApiRequest::Action(ActionType::FlushMetrics))
            .unwrap_err();
        assert!(err.to_string().contains("No metrics sink"), "{err}");
    }

    #[test]
    fn one_root_device_kept_first() {
        let mut fx = fixture();
        let file = fx.file.clone();
        let c = &mut fx.controller;
        c.handle(ApiRequest::PutDrive(drive("data", &file, false)))
            .unwrap();
        c.handle(ApiRequest::PutDrive(drive("rootfs", &file, true)))
            .unwrap();
        let err = c
            .handle(ApiRequest::PutDrive(drive("other", &file, true)))
            .unwrap_err();
        assert_eq!(err.to_string(), "A root block device already exists!");
        // Replacing the root drive itself is fine.
        c.handle(ApiRequest::PutDrive(drive("rootfs", &file, true)))
            .unwrap();
        let ids: Vec<_> = c
            .full_config()
            .drives
            .into_iter()
            .map(|d| d.drive_id)
            .collect();
        assert_eq!(ids, ["rootfs", "data"]);
        // Turning the root drive into a data drive keeps its place; a new root can then come.
        c.handle(ApiRequest::PutDrive(drive("rootfs", &file, false)))
            .unwrap();
        c.handle(ApiRequest::PutDrive(drive("other", &file, true)))
            .unwrap();
        let ids: Vec<_> = c
            .full_config()
            .drives
            .into_iter()
            .map(|d| d.drive_id)
            .collect();
        assert_eq!(ids, ["other", "rootfs", "data"]);
    }

    #[test]
    fn drive_count_is_bounded() {
        let mut fx = fixture();
        let file = fx.file.clone();
        let c = &mut fx.controller;
        for i in 0..MAX_DRIVES {
            c.handle(ApiRequest::PutDrive(drive(&format!("d{i}"), &file, false)))
                .unwrap();
        }
        assert!(matches!(
            c.handle(ApiRequest::PutDrive(drive("extra", &file, false))),
            Err(ControlError::TooManyDrives)
        ));
        // Replacing an existing drive still works at the limit.
        c.handle(ApiRequest::PutDrive(drive("d0", &file, true)))
            .unwrap();
    }

    #[test]
    fn network_interfaces_stay_unique() {
        let mut fx = fixture();
        let c = &mut fx.controller;
        c.handle(ApiRequest::PutNetworkInterface(tap(
            "eth0",
            "tap0",
            Some("06:00:00:00:00:01"),
        )))
        .unwrap();
        let err = c
            .handle(ApiRequest::PutNetworkInterface(tap("eth1", "tap0", None)))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "The host device name tap0 is already in use."
        );
        let err = c
            .handle(ApiRequest::PutNetworkInterface(tap(
                "eth1",
                "tap1",
                Some("06:00:00:00:00:01"),
            )))
            .unwrap_err();
        assert!(matches!(err, ControlError::GuestMacInUse(_)), "{err}");
        // Same id replaces in place.
        c.handle(ApiRequest::PutNetworkInterface(tap("eth0", "tap5", None)))
            .unwrap();
        let nat = NetworkInterface {
            iface_id: "eth1".into(),
            host_dev_name: None,
            guest_mac: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
            mode: Some(NetworkMode::Nat),
            network: None,
        };
        c.handle(ApiRequest::PutNetworkInterface(nat)).unwrap();
        let cfg = c.full_config();
        assert_eq!(cfg.network_interfaces.len(), 2);
        assert_eq!(
            cfg.network_interfaces[0].host_dev_name.as_deref(),
            Some("tap5")
        );
    }

    #[test]
    fn invalid_machine_config_leaves_the_old_one() {
        let mut fx = fixture();
        let c = &mut fx.controller;
        let bad = MachineConfig {
            vcpu_count: 0,
            ..MachineConfig::default()
        };
        assert!(c.handle(ApiRequest::PutMachineConfig(bad)).is_err());
        let update = MachineConfigUpdate {
            mem_size_mib: Some(1),
            ..MachineConfigUpdate::default()
        };
        assert!(c.handle(ApiRequest::PatchMachineConfig(update)).is_err());
        assert_eq!(c.full_config().machine_config, MachineConfig::default());
    }

    #[test]
    fn version_reports_both_names() {
        let mut fx = fixture();
        let ApiReply::Json(body) = fx.controller.handle(ApiRequest::GetVersion).unwrap() else {
            panic!("GET /version must answer with JSON");
        };
        let version: VersionInfo = serde_json::from_slice(&body).unwrap();
        assert_eq!(version.firecracker_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(version.vmm_version, env!("CARGO_PKG_VERSION"));
    }
}
