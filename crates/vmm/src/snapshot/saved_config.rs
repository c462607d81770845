//! The [`VmConfig`] of a VM that comes back from saved state (a snapshot load, a received
//! migration, a resume): the host decides where its serial console goes and whether the
//! emulator helps; everything else is the saved machine's.

use crate::config::{DiskConfig, PitMode, SerialMode, VmConfig};
use crate::emulator_fixups::EmulatorFixups;

use super::MachineState;

/// What [`crate::Vm::restore`] takes beside the state: the host side, and the machine's
/// shape (no boot files, no devices: those come from the state).
pub fn host_config(
    serial: SerialMode,
    emulator_fixups: EmulatorFixups,
    machine: &MachineState,
) -> VmConfig {
    VmConfig {
        kernel: Default::default(),
        initrd: None,
        cmdline: String::new(),
        memory: machine.memory,
        cpus: machine.cpus,
        serial,
        disks: Vec::new(),
        rng: false,
        console2: None,
        nics: Vec::new(),
        pit: PitMode::Auto,
        emulator_fixups,
        vsock: None,
        shares: Vec::new(),
        balloon: None,
        mmds: None,
    }
}

/// The restored VM's configuration as the API reports it and confinement admits its
/// files: `host` with the saved machine's disks, NICs and devices.
pub fn restored_config(host: &VmConfig, machine: &MachineState) -> VmConfig {
    let mut cfg = host.clone();
    cfg.disks = machine
        .disks
        .iter()
        .map(|d| DiskConfig {
            path: d.path.clone(),
            read_only: d.read_only,
            id: d.id.clone(),
            format: None,
            allow_external_backing: false,
            honour_flush: true,
            rate_limit: Default::default(),
        })
        .collect();
    // A NIC the VM could be built with converts; one that could not failed the build.
    cfg.nics = machine
        .nics
        .iter()
        .filter_map(|n| n.to_config().ok())
        .collect();
    cfg.rng = machine.rng;
    cfg.console2 = machine.console.clone();
    cfg.vsock = machine.vsock.clone();
    cfg.balloon = machine.balloon;
    cfg
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
        let full = restored_config(&host, &saved.machine);
        assert_eq!(full.disks.len(), saved.machine.disks.len());
        assert!(matches!(full.serial, SerialMode::None));
    }
}
