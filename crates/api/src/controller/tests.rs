//! The controller's tests: request handling before and after boot, refusals, replies.

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
    fn record(&self, name: &'static str) -> Result<(), crate::BackendError> {
        self.calls.lock().unwrap().push(name.to_string());
        if self.fail.contains(&name) {
            Err(format!("{name} refused by test").into())
        } else {
            Ok(())
        }
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl VmmBackend for RecordingBackend {
    fn start(&self, config: &VmConfigSnapshot) -> Result<(), crate::BackendError> {
        *self.started_with.lock().unwrap() = Some(config.clone());
        self.record("start")
    }
    fn send_ctrl_alt_del(&self) -> Result<(), crate::BackendError> {
        self.record("ctrl_alt_del")
    }
    fn pause(&self) -> Result<(), crate::BackendError> {
        self.record("pause")
    }
    fn resume(&self) -> Result<(), crate::BackendError> {
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
