//! Taking a snapshot of a paused VM: what the VM hands over for it and the order of work.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kvm_ioctls::VmFd;

use arch::GuestMemory;

use super::output::{ensure_absent, publish};
use super::state_file::{MachineState, VmSnapshot, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use super::vcpu_state::XSAVE_AREA_SIZE;
use super::{save_memory, write_state_file, SnapshotError, SnapshotReport, VmState};
use crate::control::PauseGate;

/// How long paused vCPU threads get to answer a snapshot request.
const VCPU_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything of a VM a snapshot reads besides the vCPUs.
pub struct SnapshotSource {
    pub(crate) vm: Arc<VmFd>,
    pub(crate) mem: GuestMemory,
    /// The devices whose states the snapshot holds.
    pub(crate) devices: crate::device_manager::DeviceSet,
    pub(crate) machine: MachineState,
    /// KVM_CAP_XSAVE2: the XSAVE size of this VM's vCPUs (0 when KVM predates it).
    pub(crate) xsave2_size: usize,
    /// The first device whose state snapshots do not save, if the VM has one.
    pub(crate) unsupported_device: Option<String>,
    /// Opened with the VM, before confinement: which pages of its RAM were ever touched.
    pub(crate) page_map: Option<crate::page_map::PageMap>,
}

/// `path` with `.partial` appended to its file name.
fn partial_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

impl SnapshotSource {
    /// The paused VM's state: vCPUs first (each on its own thread, which also completes a
    /// pending I/O instruction), then VM-wide KVM state and devices; `with_memory` runs
    /// while every virtio queue is frozen with its saved state, so guest memory read there
    /// matches the device states (snapshots write it to a file, migration to a stream).
    pub(crate) fn capture<R, E: From<SnapshotError>>(
        &self,
        gate: &PauseGate,
        with_memory: &mut dyn FnMut(&GuestMemory) -> Result<R, E>,
    ) -> Result<(VmSnapshot, R), E> {
        if let Some(device) = &self.unsupported_device {
            return Err(SnapshotError::UnsupportedDevice(device.clone()).into());
        }
        if self.xsave2_size > XSAVE_AREA_SIZE {
            return Err(SnapshotError::XsaveTooLarge(0).into());
        }
        // virtiofsd stops its queues and saves its state first, before the vCPUs' and the
        // VM's interrupt state is taken: a request it completes can no longer put its used
        // entry into the saved memory and its interrupt into a LAPIC already saved. Its
        // queues go on when the vCPUs do (VmHandle::resume), so requests it had not taken
        // are left to a restored VM rather than done twice.
        self.devices.pause_external()?;
        let vcpus =
            gate.collect_vcpu_states(usize::from(self.machine.cpus), VCPU_ANSWER_TIMEOUT)?;
        let vm = VmState::save(&self.vm, self.machine.pit)?;
        let (devices, result) = self
            .devices
            .with_states(&mut |states| with_memory(&self.mem).map(|r| (states, r)))?;
        let snapshot = VmSnapshot {
            magic: SNAPSHOT_MAGIC.into(),
            version: SNAPSHOT_VERSION,
            machine: self.machine.clone(),
            vm,
            vcpus,
            devices,
        };
        Ok((snapshot, result))
    }
    /// Writes a full snapshot of the paused VM: vCPUs first (each on its own thread, which
    /// also completes a pending I/O instruction), then VM-wide KVM state, devices, memory.
    pub(crate) fn create(
        &self,
        gate: &PauseGate,
        state_path: &Path,
        mem_path: &Path,
    ) -> Result<SnapshotReport, SnapshotError> {
        if let Some(device) = &self.unsupported_device {
            return Err(SnapshotError::UnsupportedDevice(device.clone()));
        }
        // Both files are written under temporary names and given their names when
        // complete, the state file last: a failed snapshot never leaves a state file next
        // to a partial memory file. None of the four names may exist (nothing is
        // overwritten, no symlink followed).
        let mem_partial = partial_path(mem_path);
        let state_partial = partial_path(state_path);
        for path in [mem_path, state_path, &mem_partial, &state_partial] {
            ensure_absent(path)?;
        }
        let written = self
            .capture(gate, &mut |mem| {
                save_memory(mem, self.page_map.as_ref(), &mem_partial)
            })
            .and_then(|(snapshot, bytes)| {
                write_state_file(&snapshot, &state_partial).map(|()| bytes)
            })
            .and_then(|bytes| {
                publish(&mem_partial, mem_path)?;
                publish(&state_partial, state_path).inspect_err(|_| {
                    let _ = std::fs::remove_file(mem_path);
                })?;
                Ok(bytes)
            });
        let memory_bytes = match written {
            Ok(bytes) => bytes,
            Err(e) => {
                // The partial files are ours, unless one appeared since the check above.
                for path in [&mem_partial, &state_partial] {
                    if !matches!(&e, SnapshotError::OutputExists(p) if p == path) {
                        let _ = std::fs::remove_file(path);
                    }
                }
                return Err(e);
            }
        };
        Ok(SnapshotReport { memory_bytes })
    }
}
