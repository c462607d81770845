//! `vessel run --api-sock PATH`: like `firecracker --api-sock`, the VMM waits for its
//! configuration over the REST API (crates/api) and boots on `InstanceStart`; the API keeps
//! serving pause/resume and Ctrl-Alt-Del while the guest runs. The process ends with the VM.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{
    BootSource, CacheType, Drive, DriveFormat, MachineConfig, NetworkMode, VmConfigSnapshot,
    VmmBackend,
};
use vmm::{DiskConfig, SerialMode, Vm, VmConfig, VmHandle};

use crate::run_cli::{error_chain, report_end, EXIT_HOST_ERROR};

/// Builds the VM (on the main thread).
type BuildVm = Box<dyn FnOnce(&VmConfig) -> Result<Vm, String> + Send>;

/// A VM for the main thread to build (with its host privileges, before it confines
/// itself) and run; the outcome of the build goes back to the API thread.
struct Launch {
    cfg: VmConfig,
    build: BuildVm,
    reply: mpsc::Sender<Result<VmHandle, String>>,
}

/// Asks the main thread to build the VM on InstanceStart (or snapshot load) and run it.
struct Backend {
    serial: SerialMode,
    /// `--console2`: a virtio-console whose output goes to this file.
    console2: Option<PathBuf>,
    to_main: Mutex<Option<mpsc::Sender<Launch>>>,
    handle: Mutex<Option<VmHandle>>,
    /// `vessel run --emulator-fixups`, for the VM the client starts or loads.
    emulator_fixups: vmm::EmulatorFixups,
}

/// How the API shows a VM that was configured elsewhere (a VM definition).
fn snapshot(vm: &VmConfig) -> VmConfigSnapshot {
    let cfg = &vm.machine;
    VmConfigSnapshot {
        machine: MachineConfig {
            vcpu_count: cfg.cpus,
            mem_size_mib: (cfg.memory >> 20) as _,
            ..MachineConfig::default()
        },
        // A VM restored from saved state booted nothing: its boot source is empty, as
        // Firecracker's is after a snapshot load.
        boot_source: vm
            .boot
            .as_ref()
            .map(|boot| BootSource {
                kernel_image_path: boot.kernel.display().to_string(),
                boot_args: Some(boot.cmdline.clone()),
                initrd_path: boot.initrd.as_ref().map(|p| p.display().to_string()),
            })
            .unwrap_or_else(|| BootSource {
                kernel_image_path: String::new(),
                boot_args: None,
                initrd_path: None,
            }),
        drives: cfg
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| Drive {
                drive_id: d.id.clone().unwrap_or_else(|| format!("disk{i}")),
                path_on_host: d.path.display().to_string(),
                is_root_device: false,
                is_read_only: d.read_only,
                partuuid: None,
                cache_type: if d.honour_flush {
                    CacheType::Writeback
                } else {
                    CacheType::Unsafe
                },
                io_engine: Default::default(),
                rate_limiter: crate::api_devices::api_limiter(&d.rate_limit),
                format: d.format.map(crate::api_devices::drive_format),
            })
            .collect(),
        network_interfaces: cfg
            .nics
            .iter()
            .enumerate()
            .map(|(i, nic)| network_interface(i, nic))
            .collect(),
        vsock: cfg.vsock.as_ref().map(|v| api::Vsock {
            vsock_id: None,
            // The CLI and VM definitions only take CIDs below 2^32 - 1.
            guest_cid: v.cid as u32,
            uds_path: v.uds.display().to_string(),
        }),
        balloon: cfg.balloon.as_ref().map(crate::api_balloon::to_api),
        mmds: None,
    }
}

/// How the API shows the `index`th NIC of a VM configured elsewhere: its mode, host device
/// or network, and its MAC when the definition names one.
fn network_interface(index: usize, nic: &net::NicConfig) -> api::NetworkInterface {
    let (mode, host_dev_name, network) = match &nic.mode {
        net::NicMode::Nat => (NetworkMode::Nat, None, None),
        net::NicMode::Tap(dev) => (NetworkMode::Tap, Some(dev.clone()), None),
        net::NicMode::NatNetwork(n) => (NetworkMode::Natnet, None, Some(n.clone())),
        net::NicMode::Internal(n) => (NetworkMode::Internal, None, Some(n.clone())),
        net::NicMode::HostOnly(n) => (NetworkMode::Hostonly, None, Some(n.clone())),
        net::NicMode::Bridged(n) => (NetworkMode::Bridged, None, Some(n.clone())),
    };
    api::NetworkInterface {
        iface_id: format!("net{index}"),
        host_dev_name,
        guest_mac: nic.mac.map(|mac| {
            mac.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        }),
        rx_rate_limiter: crate::api_devices::api_limiter(&nic.rx_limit),
        tx_rate_limiter: crate::api_devices::api_limiter(&nic.tx_limit),
        mode: Some(mode),
        network,
    }
}

/// Serve the API for a VM that already runs (`vessel start`): state, pause/resume and
/// Ctrl-Alt-Del; configuration calls get Firecracker's post-boot refusals.
pub fn serve_running(
    socket: &std::path::Path,
    cfg: &VmConfig,
    handle: VmHandle,
) -> Result<api::ApiServerHandle, api::ApiError> {
    let backend = Arc::new(Backend {
        serial: cfg.host.serial.clone(),
        console2: cfg.machine.console2.clone(),
        to_main: Mutex::new(None),
        handle: Mutex::new(Some(handle)),
        emulator_fixups: cfg.host.emulator_fixups,
    });
    api::serve(
        socket,
        backend,
        api::ServerOptions {
            running: Some(snapshot(cfg)),
            ..api::ServerOptions::default()
        },
    )
}

/// The NIC an API network interface describes, checked by the NIC's own rules.
fn nic_config(nic: &api::NetworkInterface) -> Result<net::NicConfig, String> {
    let network = || nic.network.clone().unwrap_or_default();
    let mode = match (nic.effective_mode(), &nic.host_dev_name) {
        (NetworkMode::Nat, _) => net::NicMode::Nat,
        (NetworkMode::Natnet, _) => net::NicMode::NatNetwork(network()),
        (NetworkMode::Internal, _) => net::NicMode::Internal(network()),
        (NetworkMode::Hostonly, _) => net::NicMode::HostOnly(network()),
        (NetworkMode::Bridged, _) => net::NicMode::Bridged(network()),
        (NetworkMode::Tap, Some(dev)) => net::NicMode::Tap(dev.clone()),
        (NetworkMode::Tap, None) => return Err("needs host_dev_name".into()),
    };
    let mut config = net::NicConfig::new(mode);
    config.mac = nic
        .guest_mac
        .as_deref()
        .map(net::parse_mac)
        .transpose()
        .map_err(|e| e.to_string())?;
    config.rx_limit = crate::api_devices::limits(nic.rx_rate_limiter.as_ref());
    config.tx_limit = crate::api_devices::limits(nic.tx_rate_limiter.as_ref());
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// The VMM configuration an API client described: its boot source, the machine its
/// machine configuration and devices describe, and this process's host resources.
fn vm_config(
    cfg: &VmConfigSnapshot,
    serial: SerialMode,
    emulator_fixups: vmm::EmulatorFixups,
    console2: Option<PathBuf>,
) -> Result<VmConfig, String> {
    let boot = vmm::BootSource {
        kernel: PathBuf::from(&cfg.boot_source.kernel_image_path),
        initrd: cfg.boot_source.initrd_path.as_ref().map(PathBuf::from),
        cmdline: api::with_root_args(
            &cfg.boot_source
                .boot_args
                .clone()
                .unwrap_or_else(crate::vmdef::default_cmdline),
            &cfg.drives,
        ),
    };
    Ok(VmConfig {
        boot: Some(boot),
        machine: machine_config(cfg, console2)?,
        host: vmm::HostResources {
            serial,
            emulator_fixups,
            mmds: mmds_config(cfg)?,
            backing_grants: Vec::new(),
            shares: Vec::new(),
        },
    })
}

/// The machine an API client described: its size and devices.
fn machine_config(
    cfg: &VmConfigSnapshot,
    console2: Option<PathBuf>,
) -> Result<vmm::MachineConfig, String> {
    let mut nics = Vec::new();
    for nic in &cfg.network_interfaces {
        nics.push(
            nic_config(nic).map_err(|e| format!("network interface '{}': {e}", nic.iface_id))?,
        );
    }
    Ok(vmm::MachineConfig {
        memory: cfg.machine.mem_size_bytes(),
        cpus: cfg.machine.vcpu_count,
        disks: cfg.drives.iter().map(disk_config).collect(),
        rng: false,
        console2,
        nics,
        pit: vmm::PitMode::Auto,
        vsock: cfg.vsock.as_ref().map(|v| vmm::VsockConfig {
            cid: u64::from(v.guest_cid),
            uds: PathBuf::from(&v.uds_path),
        }),
        // Firecracker's API has no shared folders.
        shares: Vec::new(),
        balloon: cfg.balloon.as_ref().map(crate::api_balloon::from_api),
    })
}

/// The disk an API drive describes.
fn disk_config(d: &Drive) -> DiskConfig {
    DiskConfig {
        path: PathBuf::from(&d.path_on_host),
        read_only: d.is_read_only,
        // The serial the guest reads; longer ids get `vessel-diskN` (documented in
        // docs/api/openapi.yaml).
        id: (d.drive_id.len() <= vmm::config::MAX_DISK_ID_LEN).then(|| d.drive_id.clone()),
        format: d.format.map(crate::api_devices::block_format),
        // Not offered by the API: images named there follow only names inside their own
        // directory.
        allow_external_backing: false,
        honour_flush: d.cache_type == CacheType::Writeback,
        rate_limit: crate::api_devices::limits(d.rate_limiter.as_ref()),
    }
}

/// The MMDS on the NICs `PUT /mmds/config` named, by their position in the VM.
fn mmds_config(cfg: &VmConfigSnapshot) -> Result<Option<vmm::MmdsConfig>, String> {
    let Some(m) = &cfg.mmds else {
        return Ok(None);
    };
    let nics = m
        .network_interfaces
        .iter()
        .map(|id| {
            cfg.network_interfaces
                .iter()
                .position(|n| &n.iface_id == id)
                .ok_or_else(|| format!("MMDS network interface '{id}' does not exist"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(vmm::MmdsConfig {
        service: m.service.clone(),
        ipv4: m.ipv4,
        nics,
    }))
}

impl Backend {
    fn handle(&self) -> Result<VmHandle, api::BackendError> {
        self.handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| api::BackendError::NotRunning("the VM is not running".into()))
    }
}

impl Backend {
    /// Has the main thread build the VM with `build` and run it; waits for the build.
    fn launch(&self, cfg: VmConfig, build: BuildVm) -> Result<(), api::BackendError> {
        use api::BackendError::{Failed, NotRunning};
        let mut to_main = self.to_main.lock().unwrap_or_else(|p| p.into_inner());
        let sender = to_main
            .as_ref()
            .ok_or_else(|| Failed("the VM was already started".into()))?;
        let (reply, answer) = mpsc::channel();
        let shutting_down = || NotRunning("the VMM is shutting down".into());
        sender
            .send(Launch { cfg, build, reply })
            .map_err(|_| shutting_down())?;
        let handle = answer.recv().map_err(|_| shutting_down())??;
        *to_main = None;
        *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(())
    }
}

impl VmmBackend for Backend {
    fn start(&self, config: &VmConfigSnapshot) -> Result<(), api::BackendError> {
        let cfg = vm_config(
            config,
            self.serial.clone(),
            self.emulator_fixups,
            self.console2.clone(),
        )?;
        self.launch(
            cfg,
            Box::new(|cfg: &VmConfig| Vm::new(cfg).map_err(|e| error_chain(&e))),
        )
    }

    fn create_snapshot(&self, params: &api::SnapshotCreateParams) -> Result<(), api::BackendError> {
        self.handle()?
            .create_snapshot(
                std::path::Path::new(&params.snapshot_path),
                std::path::Path::new(&params.mem_file_path),
            )
            .map(|_| ())
            .map_err(|e| error_chain(&e).into())
    }

    fn load_snapshot(
        &self,
        snapshot_path: &str,
        mem_path: &str,
        resume: bool,
    ) -> Result<MachineConfig, api::BackendError> {
        let snapshot = vmm::snapshot::read_state_file(std::path::Path::new(snapshot_path))
            .map_err(|e| error_chain(&e))?;
        let host = vmm::HostResources {
            serial: self.serial.clone(),
            emulator_fixups: self.emulator_fixups,
            ..Default::default()
        };
        let machine = MachineConfig {
            vcpu_count: snapshot.machine.cpus,
            mem_size_mib: snapshot.machine.memory >> 20,
            ..MachineConfig::default()
        };
        // The files the restored VM keeps using (its disks, console output...) are the
        // snapshot's.
        let files = vmm::snapshot::restored_config(&host, &snapshot.machine)
            .map_err(|e| error_chain(&e))?;
        let mem_path = PathBuf::from(mem_path);
        self.launch(
            files,
            Box::new(move |_: &VmConfig| {
                let vm = Vm::restore(&host, &snapshot, &mem_path).map_err(|e| error_chain(&e))?;
                if !resume {
                    vm.handle().pause();
                }
                Ok(vm)
            }),
        )?;
        Ok(machine)
    }

    fn send_migration(&self, params: &api::MigrationSendParams) -> Result<(), api::BackendError> {
        Ok(crate::migrate_cli::send(&self.handle()?, params)?)
    }

    fn migration_status(&self) -> Result<serde_json::Value, api::BackendError> {
        serde_json::to_value(self.handle()?.migration().progress())
            .map_err(|e| api::BackendError::Failed(e.to_string()))
    }

    fn cancel_migration(&self) -> Result<bool, api::BackendError> {
        Ok(self.handle()?.migration().cancel())
    }

    fn send_ctrl_alt_del(&self) -> Result<(), api::BackendError> {
        self.handle()?.send_ctrl_alt_del();
        Ok(())
    }

    fn pause(&self) -> Result<(), api::BackendError> {
        self.handle()?.pause();
        Ok(())
    }

    fn resume(&self) -> Result<(), api::BackendError> {
        self.handle()?.resume();
        Ok(())
    }

    fn update_drive(
        &self,
        index: usize,
        drive: &Drive,
        update: &api::DriveUpdate,
    ) -> Result<Option<DriveFormat>, api::BackendError> {
        Ok(crate::api_devices::update_drive(
            &self.handle()?,
            index,
            drive,
            update,
        )?)
    }

    fn update_network_interface(
        &self,
        index: usize,
        update: &api::NetworkInterfaceUpdate,
    ) -> Result<(), api::BackendError> {
        Ok(crate::api_devices::update_network_interface(
            &self.handle()?,
            index,
            update,
        )?)
    }

    fn configure_logger(
        &self,
        file: Option<std::fs::File>,
        config: &api::LoggerConfig,
    ) -> Result<(), api::BackendError> {
        Ok(crate::logging::configure(file, config)?)
    }

    fn balloon_config(&self) -> Result<api::Balloon, api::BackendError> {
        Ok(crate::api_balloon::config(&self.handle()?)?)
    }

    fn update_balloon(&self, amount_mib: u32) -> Result<(), api::BackendError> {
        Ok(crate::api_balloon::update(&self.handle()?, amount_mib)?)
    }

    fn balloon_statistics(&self) -> Result<api::BalloonStatistics, api::BackendError> {
        Ok(crate::api_balloon::get_statistics(&self.handle()?)?)
    }

    fn update_balloon_statistics(&self, secs: u16) -> Result<(), api::BackendError> {
        Ok(crate::api_balloon::update_statistics(
            &self.handle()?,
            secs,
        )?)
    }

    fn forwards(&self, index: usize) -> Result<Vec<api::LivePortForward>, api::BackendError> {
        Ok(crate::api_forwards::list(&self.handle()?, index)?)
    }

    fn add_forward(
        &self,
        index: usize,
        forward: &api::PortForward,
        listener: std::os::fd::OwnedFd,
    ) -> Result<(), api::BackendError> {
        Ok(crate::api_forwards::add(
            &self.handle()?,
            index,
            forward,
            listener,
        )?)
    }

    fn remove_forward(&self, index: usize, host_port: u16) -> Result<(), api::BackendError> {
        Ok(crate::api_forwards::remove(
            &self.handle()?,
            index,
            host_port,
        )?)
    }
}

/// SIGINT, SIGTERM and SIGUSR1 are blocked in every thread from here on (the VM's event loop
/// reads them from a signalfd); until the VM runs, this thread polls for them.
pub(crate) fn block_control_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; only this thread's mask changes.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

fn stop_requested(set: &libc::sigset_t) -> bool {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid set and timeout; a null siginfo is allowed.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &zero) };
    sig == libc::SIGINT || sig == libc::SIGTERM
}

pub fn run(
    socket: PathBuf,
    serial: SerialMode,
    emulator_fixups: vmm::EmulatorFixups,
    console2: Option<PathBuf>,
    mmds_size_limit: usize,
) -> i32 {
    let signals = block_control_signals();
    let (tx, rx) = mpsc::channel();
    let backend = Arc::new(Backend {
        serial,
        console2,
        to_main: Mutex::new(Some(tx)),
        handle: Mutex::new(None),
        emulator_fixups,
    });
    let options = api::ServerOptions {
        mmds_size_limit,
        ..api::ServerOptions::default()
    };
    let server = match api::serve(&socket, backend, options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "vessel: error: cannot serve the API on {}: {}",
                socket.display(),
                error_chain(&e)
            );
            return EXIT_HOST_ERROR;
        }
    };
    let vm = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(launch) => match build(launch) {
                Built::Vm(vm) => break Some(*vm),
                Built::Refused => continue,
                Built::Unconfined => {
                    let _ = server.shutdown();
                    return EXIT_HOST_ERROR;
                }
            },
            Err(RecvTimeoutError::Timeout) if !stop_requested(&signals) => continue,
            Err(_) => break None,
        }
    };
    let code = match vm {
        Some(vm) => match vm.run() {
            Ok(reason) => report_end(&reason),
            Err(e) => {
                eprintln!("vessel: error: {}", error_chain(&e));
                EXIT_HOST_ERROR
            }
        },
        None => 0,
    };
    let _ = server.shutdown();
    code
}

/// What became of a launch request.
enum Built {
    Vm(Box<Vm>),
    /// It could not be built; the API client has the error and may try again.
    Refused,
    /// Built, but the VMM could not be confined: it must not run the guest.
    Unconfined,
}

/// Build a VM the API asked for, confine the VMM and answer the API thread.
fn build(launch: Launch) -> Built {
    let vm = match (launch.build)(&launch.cfg) {
        Ok(vm) => vm,
        Err(e) => {
            let _ = launch.reply.send(Err(e));
            return Built::Refused;
        }
    };
    if let Err(e) = crate::confinement::lock_down(&launch.cfg, &[]) {
        eprintln!("vessel: error: {e:#}");
        let _ = launch.reply.send(Err(format!("{e:#}")));
        return Built::Unconfined;
    }
    let _ = launch.reply.send(Ok(vm.handle()));
    Built::Vm(Box::new(vm))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_nics(specs: &[&str]) -> VmConfig {
        let mut cfg = VmConfig::new(PathBuf::from("/k"), 64 << 20, 1);
        if let Some(boot) = &mut cfg.boot {
            boot.cmdline = "console=ttyS0".into();
        }
        cfg.machine.nics = specs.iter().map(|s| net::parse_nic(s).unwrap()).collect();
        cfg
    }

    #[test]
    fn a_background_vm_reports_its_nics() {
        let cfg = config_with_nics(&["nat,mac=52:54:00:12:34:56", "tap:tap7", "internal:lab"]);
        let shown = serde_json::to_value(snapshot(&cfg).network_interfaces).unwrap();
        assert_eq!(
            shown,
            serde_json::json!([
                {"iface_id": "net0", "guest_mac": "52:54:00:12:34:56", "mode": "nat"},
                {"iface_id": "net1", "host_dev_name": "tap7", "mode": "tap"},
                {"iface_id": "net2", "mode": "internal", "network": "lab"},
            ])
        );
    }

    #[test]
    fn every_reported_nic_converts_back() {
        let cfg = config_with_nics(&[
            "natnet:n1",
            "hostonly:h1",
            "bridged:br0",
            "tap:tap7",
            "nat,mac=52:54:00:12:34:56",
            "internal:lab",
        ]);
        let mut shown = snapshot(&cfg);
        for nic in &shown.network_interfaces {
            assert_eq!(api::validate_network_interface(nic), Ok(()), "{nic:?}");
        }
        let back = vm_config(&shown, SerialMode::None, Default::default(), None).unwrap();
        assert_eq!(back.machine.nics, cfg.machine.nics);
        shown.network_interfaces[1].network = Some("../h1".into());
        let err = vm_config(&shown, SerialMode::None, Default::default(), None).unwrap_err();
        assert!(
            err.contains("network interface 'net1'") && err.contains("../h1"),
            "{err}"
        );
    }

    #[test]
    fn the_root_drive_reaches_the_kernel_command_line() {
        let mut shown = snapshot(&config_with_nics(&[]));
        shown.drives.push(Drive {
            drive_id: "rootfs".into(),
            path_on_host: "/img".into(),
            is_root_device: true,
            is_read_only: true,
            partuuid: None,
            cache_type: Default::default(),
            io_engine: Default::default(),
            rate_limiter: None,
            format: None,
        });
        let cfg = vm_config(&shown, SerialMode::None, Default::default(), None).unwrap();
        assert_eq!(cfg.boot.unwrap().cmdline, "console=ttyS0 root=/dev/vda ro");
        // Firecracker's default cache type, Unsafe, offers no flush.
        assert!(!cfg.machine.disks[0].honour_flush);
        shown.drives[0].cache_type = CacheType::Writeback;
        let cfg = vm_config(&shown, SerialMode::None, Default::default(), None).unwrap();
        assert!(cfg.machine.disks[0].honour_flush);
        assert_eq!(snapshot(&cfg).drives[0].cache_type, CacheType::Writeback);
    }
}
