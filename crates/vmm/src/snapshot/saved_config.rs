//! The [`VmConfig`] of a VM that comes back from saved state (a snapshot load, a received
//! migration, a resume): it boots nothing, the host gives its [`HostResources`] (serial
//! console, emulator, disks granted external backing files), the machine is the saved one.

use crate::config::{DiskConfig, HostResources, MachineConfig, PitMode, VmConfig};

use super::saved_nic::{console_path, effective_mac, SavedNic};
use super::{MachineState, SavedDisk, SavedShare, SnapshotError};

/// The configuration of the VM rebuilt from `machine` on a host that gives `host`: it
/// boots nothing; its shape, disks, NICs and devices are the saved machine's. The builder
/// builds from it, the API reports it and confinement admits its files. A saved disk
/// format or NIC that is not valid is refused.
pub fn restored_config(
    host: &HostResources,
    machine: &MachineState,
) -> Result<VmConfig, SnapshotError> {
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
            // inside their own directory, unless the host grants it for that disk (a
            // resumed VM's definition).
            allow_external_backing: host.backing_grants.contains(&d.path),
            // Flushes are honoured after a restore whatever the saved VM did: the guest's
            // acked features stay a subset of the offered ones.
            honour_flush: true,
            // Limits are not saved in snapshots.
            rate_limit: Default::default(),
        });
    }
    let nics = machine
        .nics
        .iter()
        .map(SavedNic::to_config)
        .collect::<Result<_, _>>()?;
    Ok(VmConfig {
        boot: None,
        machine: MachineConfig {
            memory: machine.memory,
            cpus: machine.cpus,
            pit: if machine.pit {
                PitMode::On
            } else {
                PitMode::Off
            },
            disks,
            rng: machine.rng,
            console2: machine.console.clone(),
            nics,
            vsock: machine.vsock.clone(),
            shares: restored_shares(host, machine)?,
            balloon: machine.balloon,
        },
        // The metadata service is not saved; a restored VM has none.
        host: HostResources {
            mmds: None,
            ..host.clone()
        },
    })
}

/// The shares of the VM rebuilt from `machine`: the host's (its definition's), which must
/// be the saved ones — same tags, same order, same access. The directories are the host's
/// alone: a state file never names one.
fn restored_shares(
    host: &HostResources,
    machine: &MachineState,
) -> Result<Vec<vhost_user::fs::Share>, SnapshotError> {
    let given: Vec<SavedShare> = host.shares.iter().map(saved_share).collect();
    if given != machine.shares {
        let label = |shares: &[SavedShare]| {
            if shares.is_empty() {
                return "none".to_string();
            }
            let tags: Vec<String> = shares
                .iter()
                .map(|s| format!("{:?}{}", s.tag, if s.readonly { " (readonly)" } else { "" }))
                .collect();
            tags.join(", ")
        };
        return Err(SnapshotError::Shares {
            saved: label(&machine.shares),
            given: label(&given),
        });
    }
    Ok(host.shares.clone())
}

fn saved_share(share: &vhost_user::fs::Share) -> SavedShare {
    SavedShare {
        tag: share.tag.clone(),
        readonly: share.readonly,
    }
}

/// The machine `cfg` (as built, NIC MACs chosen) describes, as a state file records it.
pub(crate) fn machine_state(cfg: &VmConfig, pit: bool) -> MachineState {
    let cfg = &cfg.machine;
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
        shares: cfg.shares.iter().map(saved_share).collect(),
        balloon: cfg.balloon,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SerialMode;

    #[test]
    fn the_restored_config_has_the_saved_shape_and_the_hosts_serial() {
        let saved = super::super::sample_state();
        let host = HostResources {
            serial: SerialMode::File("/run/com1".into()),
            ..Default::default()
        };
        let full = restored_config(&host, &saved.machine).unwrap();
        assert!(full.boot.is_none(), "a restored VM boots nothing");
        assert_eq!((full.machine.memory, full.machine.cpus), (128 << 20, 2));
        assert_eq!(full.machine.disks.len(), saved.machine.disks.len());
        assert_eq!(full.host.serial, host.serial);
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
        let cfg = restored_config(&HostResources::default(), &machine).unwrap();
        assert_eq!(cfg.machine.disks[0].format, Some(block::Format::Qcow2));
        assert!(!cfg.machine.disks[0].allow_external_backing);
        assert_eq!(cfg.machine.nics[0].mac, Some([0x52, 0x54, 0, 9, 8, 7]));
        assert_eq!(machine_state(&cfg, machine.pit), machine);
    }

    #[test]
    fn only_the_hosts_own_disk_may_follow_external_backing_files() {
        let machine = machine_with_a_disk_and_a_nic("qcow2");
        let host = HostResources {
            backing_grants: vec![machine.disks[0].path.clone()],
            ..Default::default()
        };
        let cfg = restored_config(&host, &machine).unwrap();
        assert!(cfg.machine.disks[0].allow_external_backing);
    }

    #[test]
    fn a_saved_disk_format_vessel_does_not_know_is_refused_with_the_disk() {
        let machine = machine_with_a_disk_and_a_nic("ntfs");
        let err = restored_config(&HostResources::default(), &machine)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/var/lib/vessel/disk.qcow2"), "{err}");
    }

    #[test]
    fn shares_come_from_the_host_and_must_be_the_saved_ones() {
        let dir = tempfile::tempdir().unwrap();
        let share = |tag: &str, readonly| vhost_user::fs::Share::new(dir.path(), tag, readonly);
        let mut machine = super::super::sample_state().machine;
        machine.shares = vec![SavedShare {
            tag: "data".into(),
            readonly: false,
        }];
        let host = |shares| HostResources {
            shares,
            ..Default::default()
        };
        let cfg = restored_config(&host(vec![share("data", false).unwrap()]), &machine).unwrap();
        assert_eq!(
            cfg.machine.shares[0].dir,
            dir.path().canonicalize().unwrap()
        );
        assert_eq!(machine_state(&cfg, machine.pit), machine);
        for given in [
            vec![],
            vec![share("other", false).unwrap()],
            vec![share("data", true).unwrap()],
            vec![share("data", false).unwrap(), share("more", false).unwrap()],
        ] {
            let err = restored_config(&host(given), &machine).unwrap_err();
            assert!(matches!(err, SnapshotError::Shares { .. }), "{err}");
            assert!(err.to_string().contains("\"data\""), "{err}");
        }
    }
}
