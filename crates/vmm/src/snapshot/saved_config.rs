//! The [`VmConfig`] of a VM that comes back from saved state (a snapshot load, a received
//! migration, a resume): the host decides where its serial console goes and whether the
//! emulator helps; everything else is the saved machine's.

use crate::config::{DiskConfig, SerialMode, VmConfig};
use crate::emulator_fixups::EmulatorFixups;

use super::saved_nic::{console_path, effective_mac, SavedNic};
use super::{MachineState, SavedDisk, SnapshotError};

/// What [`crate::Vm::restore`] takes beside the state: the host side, and the machine's
/// shape (no boot files, no devices: those come from the state).
pub fn host_config(
    serial: SerialMode,
    emulator_fixups: EmulatorFixups,
    machine: &MachineState,
) -> VmConfig {
    VmConfig {
        serial,
        emulator_fixups,
        ..VmConfig::new(Default::default(), machine.memory, machine.cpus)
    }
}

/// The configuration of the VM rebuilt from `machine`: `host` with the saved machine's
/// disks, NICs and devices. The builder builds from it, the API reports it and
/// confinement admits its files. A saved disk format or NIC that is not valid is refused.
pub fn restored_config(host: &VmConfig, machine: &MachineState) -> Result<VmConfig, SnapshotError> {
    let mut disks = Vec::with_capacity(machine.disks.len());
    for d in &machine.disks {
        let format =
            match &d.format {
                Some(name) => Some(name.parse::<block::Format>().map_err(|e| {
                    SnapshotError::Invalid(format!("disk {}: {e}", d.path.display()))
                })?),
                None => None,
            };
        disks.push(DiskConfig {
            path: d.path.clone(),
            read_only: d.read_only,
            id: d.id.clone(),
            format,
            // A snapshot file cannot grant this: images it names follow only names
            // inside their own directory, unless the host's own configuration grants it
            // for that disk (a resumed VM's definition).
            allow_external_backing: host
                .disks
                .iter()
                .any(|h| h.path == d.path && h.allow_external_backing),
            // Flushes are honoured after a restore whatever the saved VM did: the guest's
            // acked features stay a subset of the offered ones.
            honour_flush: true,
            // Limits are not saved in snapshots.
            rate_limit: Default::default(),
        });
    }
    Ok(VmConfig {
        memory: machine.memory,
        cpus: machine.cpus,
        disks,
        nics: machine
            .nics
            .iter()
            .map(SavedNic::to_config)
            .collect::<Result<_, _>>()?,
        rng: machine.rng,
        console2: machine.console.clone(),
        vsock: machine.vsock.clone(),
        // A VM with shares is never snapshotted (unsupported_device).
        shares: Vec::new(),
        balloon: machine.balloon,
        mmds: None,
        ..host.clone()
    })
}

/// The machine `cfg` (as built, NIC MACs chosen) describes, as a state file records it.
pub(crate) fn machine_state(cfg: &VmConfig, pit: bool) -> MachineState {
    MachineState {
        memory: cfg.memory,
        cpus: cfg.cpus,
        pit,
        disks: cfg
            .disks
            .iter()
            .map(|d| SavedDisk {
                path: d.path.clone(),
                read_only: d.read_only,
                id: d.id.clone(),
                format: d.format.map(|f| f.name().to_string()),
            })
            .collect(),
        nics: cfg
            .nics
            .iter()
            .enumerate()
            .map(|(i, n)| SavedNic::new(n, effective_mac(i, n)))
            .collect(),
        rng: cfg.rng,
        console: cfg.console2.as_deref().map(console_path),
        vsock: cfg.vsock.clone(),
        balloon: cfg.balloon,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restored_config_has_the_saved_shape_and_the_hosts_serial() {
        let saved = super::super::sample_state();
        let host = host_config(SerialMode::None, EmulatorFixups::Off, &saved.machine);
        assert_eq!((host.memory, host.cpus), (128 << 20, 2));
        assert!(host.disks.is_empty() && host.nics.is_empty());
        let full = restored_config(&host, &saved.machine).unwrap();
        assert_eq!(full.disks.len(), saved.machine.disks.len());
        assert!(matches!(full.serial, SerialMode::None));
    }

    fn machine_with_a_disk_and_a_nic(format: &str) -> MachineState {
        let mut machine = super::super::sample_state().machine;
        machine.disks.push(SavedDisk {
            path: "/var/lib/vessel/disk.qcow2".into(),
            read_only: false,
            id: Some("root".into()),
            format: Some(format.into()),
        });
        let nic = net::parse_nic("nat,forward=tcp:127.0.0.1:2222-:22").unwrap();
        machine
            .nics
            .push(SavedNic::new(&nic, [0x52, 0x54, 0, 9, 8, 7]));
        machine
    }

    #[test]
    fn a_restored_machine_is_recorded_as_it_was_saved() {
        let machine = machine_with_a_disk_and_a_nic("qcow2");
        let host = host_config(SerialMode::None, EmulatorFixups::Off, &machine);
        let cfg = restored_config(&host, &machine).unwrap();
        assert_eq!(cfg.disks[0].format, Some(block::Format::Qcow2));
        assert!(!cfg.disks[0].allow_external_backing);
        assert_eq!(cfg.nics[0].mac, Some([0x52, 0x54, 0, 9, 8, 7]));
        assert_eq!(machine_state(&cfg, machine.pit), machine);
    }

    #[test]
    fn only_the_hosts_own_disk_may_follow_external_backing_files() {
        let machine = machine_with_a_disk_and_a_nic("qcow2");
        let mut host = host_config(SerialMode::None, EmulatorFixups::Off, &machine);
        host.disks = restored_config(&host, &machine).unwrap().disks;
        host.disks[0].allow_external_backing = true;
        let cfg = restored_config(&host, &machine).unwrap();
        assert!(cfg.disks[0].allow_external_backing);
    }

    #[test]
    fn a_saved_disk_format_vessel_does_not_know_is_refused_with_the_disk() {
        let machine = machine_with_a_disk_and_a_nic("ntfs");
        let host = host_config(SerialMode::None, EmulatorFixups::Off, &machine);
        let err = restored_config(&host, &machine).unwrap_err().to_string();
        assert!(err.contains("/var/lib/vessel/disk.qcow2"), "{err}");
    }
}
