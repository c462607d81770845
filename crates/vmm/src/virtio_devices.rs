//! The virtio device models a VM is built with, new or from a snapshot's saved states,
//! in PCI slot order; and which of them snapshots cannot save.

use crate::config::VmConfig;
use crate::console_log::{ConsoleLog, CONSOLE_LOG_LIMIT};
use crate::pci_devices::DeviceSpec;
use crate::vm::VmError;

/// The devices to plug in, and the balloon's slot index and handle when there is one.
pub(crate) struct VirtioDevices {
    pub devices: Vec<DeviceSpec>,
    pub balloon: Option<(usize, virtio::balloon::BalloonHandle)>,
}

/// The first device of `cfg` whose state snapshots do not save: virtio-vsock, whose host
/// connections cannot be saved.
pub(crate) fn unsupported_device(cfg: &VmConfig) -> Option<String> {
    cfg.vsock
        .as_ref()
        .map(|_| "virtio-vsock (its host connections cannot be saved)".to_string())
}

/// The virtio device models `cfg` asks for, in PCI slot order: disks, NICs, rng, console,
/// vsock, balloon; with `saved` (a snapshot's states in slot order), each restored from its
/// state.
pub(crate) fn virtio_devices(
    cfg: &VmConfig,
    saved: Option<&[virtio::VirtioPciState]>,
) -> Result<VirtioDevices, VmError> {
    use crate::snapshot::restore_model;
    let mut devices: Vec<DeviceSpec> = Vec::new();
    let state = |slot: usize| saved.and_then(|s| s.get(slot)).map(|s| &s.device);
    for (i, d) in cfg.disks.iter().enumerate() {
        let opts = block::OpenOptions {
            read_only: d.read_only,
            format: d.format,
            allow_external_backing: d.allow_external_backing,
        };
        let image = block::open(&d.path, &opts).map_err(|source| VmError::Disk {
            path: d.path.clone(),
            source,
        })?;
        if image.size() % 512 != 0 {
            return Err(VmError::DiskSize {
                path: d.path.clone(),
                size: image.size(),
            });
        }
        let serial = d.id.clone().unwrap_or_else(|| format!("vessel-disk{i}"));
        if serial.len() > 20 {
            return Err(VmError::DiskId(serial));
        }
        let block = virtio::blk::Block::new(image, &serial);
        let block = if d.honour_flush {
            block
        } else {
            block.ignoring_flush()
        };
        devices.push(DeviceSpec::new(Box::new(block)));
    }
    for (index, nic) in cfg.nics.iter().enumerate() {
        // The MAC is chosen first: a natnet backend gives a MAC its previous address back.
        let mac = crate::snapshot::effective_mac(index, nic);
        let nic = net::NicConfig {
            mac: Some(mac),
            ..nic.clone()
        };
        let backend = net::open_backend(&nic).map_err(|source| VmError::Nic {
            index,
            mode: format!("{:?}", nic.mode),
            source,
        })?;
        let device = restore_model::net(backend, mac, state(devices.len()), devices.len())?;
        let fd = device.backend_fd();
        devices.push(DeviceSpec {
            device: Box::new(device),
            backend_fd: Some(fd),
        });
    }
    if cfg.rng {
        devices.push(DeviceSpec::new(Box::new(virtio::rng::Rng::new())));
    }
    if let Some(path) = &cfg.console2 {
        let out =
            ConsoleLog::open(path, CONSOLE_LOG_LIMIT).map_err(|source| VmError::ConsoleFile {
                path: path.clone(),
                source,
            })?;
        let console = restore_model::console(Box::new(out), state(devices.len()), devices.len())?;
        devices.push(DeviceSpec::new(Box::new(console)));
    }
    if let Some(v) = &cfg.vsock {
        let device = virtio::vsock::Vsock::new(v.cid, &v.uds).map_err(VmError::Vsock)?;
        let fd = device.backend_fd();
        devices.push(DeviceSpec {
            device: Box::new(device),
            backend_fd: Some(fd),
        });
    }
    let balloon = match &cfg.balloon {
        Some(b) => Some(balloon(cfg, b, state(devices.len()), &mut devices)?),
        None => None,
    };
    Ok(VirtioDevices { devices, balloon })
}

/// Plug in the balloon; returns its slot index and its handle.
fn balloon(
    cfg: &VmConfig,
    b: &virtio::balloon::BalloonConfig,
    saved: Option<&virtio::DeviceState>,
    devices: &mut Vec<DeviceSpec>,
) -> Result<(usize, virtio::balloon::BalloonHandle), VmError> {
    let memory_mib = cfg.memory >> 20;
    if u64::from(b.amount_mib) > memory_mib {
        return Err(VmError::Balloon(format!(
            "Requested memory should be less than {memory_mib}MiB"
        )));
    }
    let device = crate::snapshot::restore_model::balloon(*b, saved, devices.len())?;
    let handle = device.handle();
    let index = devices.len();
    devices.push(DeviceSpec {
        backend_fd: device.backend_fd(),
        device: Box::new(device),
    });
    Ok((index, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SerialMode;

    #[test]
    fn snapshots_refuse_a_vm_with_vsock() {
        let mut cfg = VmConfig {
            kernel: "k".into(),
            initrd: None,
            cmdline: String::new(),
            memory: 64 << 20,
            cpus: 1,
            serial: SerialMode::None,
            disks: Vec::new(),
            rng: true,
            console2: None,
            nics: Vec::new(),
            pit: crate::PitMode::Auto,
            emulator_fixups: crate::EmulatorFixups::Auto,
            vsock: None,
            balloon: None,
        };
        assert_eq!(unsupported_device(&cfg), None);
        cfg.vsock = Some(crate::VsockConfig {
            cid: 3,
            uds: "/tmp/v.sock".into(),
        });
        let what = unsupported_device(&cfg).unwrap();
        assert!(what.starts_with("virtio-vsock"), "{what}");
    }
}
