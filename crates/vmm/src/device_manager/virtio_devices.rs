//! The virtio device models a VM is built with, new or from a snapshot's saved states,
//! in PCI slot order, with the rate limiters of its disks and NICs. A `nat` NIC carries the
//! relay of run-time port forwards. (The shares' devices, which follow, are
//! [`crate::shares`]'; a share whose virtiofsd cannot save its state is what snapshots
//! refuse.)

use virtio::rate_limiter::RateLimiterHandle;

use crate::config::VmConfig;
use crate::console_log::{ConsoleLog, CONSOLE_LOG_LIMIT};
use crate::device_control::{open_disk, DeviceControls, DiskControl, NicControl};
use crate::device_manager::pci::DeviceSpec;
use crate::error::VmError;

/// The devices to plug in, the balloon's slot index and handle when there is one, and the
/// rate limiters.
pub(crate) struct VirtioDevices {
    pub devices: Vec<DeviceSpec>,
    pub balloon: Option<(usize, virtio::balloon::BalloonHandle)>,
    pub limiters: Limiters,
}

/// The rate limiters of the disks (slots 0..) and NICs (after the disks).
#[derive(Default)]
pub(crate) struct Limiters {
    disks: Vec<RateLimiterHandle>,
    nics: Vec<(
        RateLimiterHandle,
        RateLimiterHandle,
        Option<net::forward_nic::ForwardControl>,
    )>,
}

impl Limiters {
    /// The run-time controls, given the queue processors in slot order.
    pub(crate) fn into_controls(self, processors: &[virtio::QueueProcessor]) -> DeviceControls {
        DeviceControls {
            disks: self
                .disks
                .into_iter()
                .zip(processors)
                .map(|(limiter, processor)| DiskControl {
                    limiter,
                    processor: processor.clone(),
                })
                .collect(),
            nics: self
                .nics
                .into_iter()
                .map(|(rx, tx, forwards)| NicControl { rx, tx, forwards })
                .collect(),
        }
    }
}

/// The vsock connect timeout on kvm_pvm hosts (Firecracker's 2 s elsewhere).
const NESTED_VSOCK_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The virtio device models `cfg` asks for, in PCI slot order: disks, NICs, rng, console,
/// vsock, balloon (the shares' devices follow, from crate::shares); with `saved` (a
/// snapshot's states in slot order), each restored from its state.
pub(crate) fn virtio_devices(
    cfg: &VmConfig,
    saved: Option<&[virtio::VirtioPciState]>,
) -> Result<VirtioDevices, VmError> {
    use crate::snapshot::restore_model;
    let mut devices: Vec<DeviceSpec> = Vec::new();
    let mut limiters = Limiters::default();
    let state = |slot: usize| saved.and_then(|s| s.get(slot)).map(|s| &s.device);
    for (i, d) in cfg.machine.disks.iter().enumerate() {
        let (spec, limiter) = disk(i, d)?;
        devices.push(spec);
        limiters.disks.push(limiter);
    }
    for (index, nic) in cfg.machine.nics.iter().enumerate() {
        // The MAC is chosen first: a natnet backend gives a MAC its previous address back.
        let mac = crate::snapshot::effective_mac(index, nic);
        let nic = net::NicConfig {
            mac: Some(mac),
            ..nic.clone()
        };
        let nic_error = |source| VmError::Nic {
            index,
            mode: format!("{:?}", nic.mode),
            source,
        };
        let mut backend = net::open_backend(&nic).map_err(nic_error)?;
        let mut forwards = None;
        if nic.mode == net::NicMode::Nat {
            let (with_relay, control) = net::forward_nic::with_forwards(
                backend,
                net::passt::GUEST_ADDR,
                net::passt::GATEWAY,
            )
            .map_err(|e| nic_error(e.into()))?;
            backend = Box::new(with_relay);
            forwards = Some(control);
        }
        if let Some(m) = cfg.host.mmds.as_ref().filter(|m| m.nics.contains(&index)) {
            let with_mmds = net::mmds_nic::with_mmds(backend, m.service.clone(), m.ipv4)
                .map_err(|e| nic_error(e.into()))?;
            backend = Box::new(with_mmds);
        }
        let device = restore_model::net(backend, mac, state(devices.len()), devices.len())?;
        let rx = RateLimiterHandle::new(nic.rx_limit).map_err(VmError::RateLimiter)?;
        let tx = RateLimiterHandle::new(nic.tx_limit).map_err(VmError::RateLimiter)?;
        let fds = vec![device.backend_fd(), rx.timer_fd(), tx.timer_fd()];
        let device = device.with_rate_limiters(Some(rx.clone()), Some(tx.clone()));
        devices.push(DeviceSpec {
            device: Box::new(device),
            backend_fds: fds,
        });
        limiters.nics.push((rx, tx, forwards));
    }
    if cfg.machine.rng {
        devices.push(DeviceSpec::new(Box::new(virtio::rng::Rng::new())));
    }
    if let Some(path) = &cfg.machine.console2 {
        let out =
            ConsoleLog::open(path, CONSOLE_LOG_LIMIT).map_err(|source| VmError::ConsoleFile {
                path: path.clone(),
                source,
            })?;
        let console = restore_model::console(Box::new(out), state(devices.len()), devices.len())?;
        devices.push(DeviceSpec::new(Box::new(console)));
    }
    if let Some(v) = &cfg.machine.vsock {
        let mut device = match state(devices.len()) {
            None => virtio::vsock::Vsock::new(v.cid, &v.uds).map_err(VmError::Vsock)?,
            Some(saved) => restore_model::vsock(v, saved, devices.len())?,
        };
        if crate::emulator_fixups::host_is_pvm() {
            // Guest ring 0 is emulated there: a guest can take seconds to accept.
            device.set_connect_timeout(NESTED_VSOCK_CONNECT_TIMEOUT);
        }
        let fd = device.backend_fd();
        devices.push(DeviceSpec {
            device: Box::new(device),
            backend_fds: vec![fd],
        });
    }
    let balloon = match &cfg.machine.balloon {
        Some(b) => Some(balloon(cfg, b, state(devices.len()), &mut devices)?),
        None => None,
    };
    Ok(VirtioDevices {
        devices,
        balloon,
        limiters,
    })
}

/// Disk `i`: its virtio-blk device behind its rate limiter.
fn disk(
    i: usize,
    d: &crate::config::DiskConfig,
) -> Result<(DeviceSpec, RateLimiterHandle), VmError> {
    let image = open_disk(d).map_err(|source| VmError::Disk {
        path: d.path.clone(),
        source,
    })?;
    if image.size() % 512 != 0 {
        return Err(VmError::DiskSize {
            path: d.path.clone(),
            size: image.size(),
        });
    }
    // An id longer than virtio-blk's 20 bytes was refused by `VmConfig::validate`.
    let serial = d.id.clone().unwrap_or_else(|| format!("vessel-disk{i}"));
    let block = virtio::blk::Block::new(image, &serial);
    let block = if d.honour_flush {
        block
    } else {
        block.ignoring_flush()
    };
    let limiter = RateLimiterHandle::new(d.rate_limit).map_err(VmError::RateLimiter)?;
    let spec = DeviceSpec {
        device: Box::new(block.with_rate_limiter(limiter.clone())),
        backend_fds: vec![limiter.timer_fd()],
    };
    Ok((spec, limiter))
}

/// Plug in the balloon; returns its slot index and its handle.
fn balloon(
    cfg: &VmConfig,
    b: &virtio::balloon::BalloonConfig,
    saved: Option<&virtio::DeviceState>,
    devices: &mut Vec<DeviceSpec>,
) -> Result<(usize, virtio::balloon::BalloonHandle), VmError> {
    let memory_mib = cfg.machine.memory >> 20;
    if u64::from(b.amount_mib) > memory_mib {
        return Err(VmError::Balloon(format!(
            "Requested memory should be less than {memory_mib}MiB"
        )));
    }
    if let Some(d) = &b.dynamic {
        if b.stats_polling_interval_s == 0 {
            return Err(VmError::Balloon(
                "dynamic memory follows the guest's statistics: set stats_polling_interval_s"
                    .into(),
            ));
        }
        if u64::from(d.min_mib) > memory_mib
            || d.buffer_percent > virtio::balloon::MAX_BUFFER_PERCENT
        {
            return Err(VmError::Balloon(format!(
                "dynamic memory: min_mib {} must be at most the VM's {memory_mib} MiB and \
                 buffer_percent {} at most {}",
                d.min_mib,
                d.buffer_percent,
                virtio::balloon::MAX_BUFFER_PERCENT
            )));
        }
    }
    let device = crate::snapshot::restore_model::balloon(*b, saved, devices.len())?;
    let handle = device.handle();
    let index = devices.len();
    devices.push(DeviceSpec {
        backend_fds: device.backend_fd().into_iter().collect(),
        device: Box::new(device),
    });
    Ok((index, handle))
}
