//! Controlling a running VM from other threads (the API server, signal handlers): pause
//! and resume the vCPUs, press Ctrl-Alt-Del, stop, reach the balloon.

use std::sync::{Arc, Condvar, Mutex};

use devices::i8042::I8042;
use devices::{ExitReason, VmExit};
use vmm_sys_util::eventfd::EventFd;

use crate::kick;

/// What a vCPU thread answers to a snapshot request.
type SavedVcpu = Result<crate::snapshot::VcpuState, String>;

#[derive(Default)]
struct GateState {
    paused: bool,
    /// Incremented for every snapshot request; each vCPU answers each round once.
    save_round: u64,
    /// Per vCPU, its answer to the current round.
    saved: Vec<Option<SavedVcpu>>,
}

/// Whether vCPUs may run; vCPU threads wait here while the VM is paused, and save their
/// state here when a snapshot asks for it.
#[derive(Default)]
pub struct PauseGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl PauseGate {
    /// Block while paused, unless `stopping()` says the VM is ending. While waiting, vCPU
    /// `id` answers snapshot requests it has not answered yet (`seen_round`) with `save()`.
    pub fn wait_while_paused(
        &self,
        stopping: impl Fn() -> bool,
        id: usize,
        seen_round: &mut u64,
        mut save: impl FnMut() -> SavedVcpu,
    ) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while state.paused && !stopping() {
            if state.save_round != *seen_round {
                *seen_round = state.save_round;
                let saved = save();
                if let Some(slot) = state.saved.get_mut(id) {
                    *slot = Some(saved);
                }
                self.changed.notify_all();
                continue;
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Whether the vCPUs are told to stay paused.
    pub(crate) fn is_paused(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).paused
    }

    fn set(&self, value: bool) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).paused = value;
        self.changed.notify_all();
    }

    /// Asks each of `cpus` paused vCPU threads for its state and waits for all answers.
    pub(crate) fn collect_vcpu_states(
        &self,
        cpus: usize,
        timeout: std::time::Duration,
    ) -> Result<Vec<crate::snapshot::VcpuState>, crate::snapshot::SnapshotError> {
        use crate::snapshot::SnapshotError;
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.paused {
            return Err(SnapshotError::NotPaused);
        }
        state.save_round += 1;
        state.saved = (0..cpus).map(|_| None).collect();
        self.changed.notify_all();
        while state.saved.iter().any(Option::is_none) {
            let now = std::time::Instant::now();
            if now >= deadline {
                let missing = state.saved.iter().filter(|s| s.is_none()).count();
                return Err(SnapshotError::Vcpus(format!(
                    "{missing} of {cpus} vCPUs did not stop within {timeout:?}"
                )));
            }
            if !state.paused {
                return Err(SnapshotError::NotPaused);
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        std::mem::take(&mut state.saved)
            .into_iter()
            .flatten()
            .collect::<Result<Vec<_>, String>>()
            .map_err(SnapshotError::Vcpus)
    }
}

/// A cloneable handle on a VM, valid before and while it runs.
#[derive(Clone)]
pub struct VmHandle {
    pub(crate) exit: VmExit,
    pub(crate) i8042: Arc<Mutex<I8042>>,
    /// irqfd of the ACPI Generic Event Device (the power button).
    pub(crate) power_button: Arc<EventFd>,
    pub(crate) gate: Arc<PauseGate>,
    /// pthread ids of the vCPU threads, once they run.
    pub(crate) vcpu_threads: Arc<Mutex<Vec<libc::pthread_t>>>,
    /// What a snapshot of this VM reads.
    pub(crate) snapshot: Arc<crate::snapshot::SnapshotSource>,
    /// Run-time controls of the disks and NICs.
    pub(crate) devices: Arc<crate::device_control::DeviceControls>,
    /// The virtio-balloon, when the VM has one.
    pub(crate) balloon: Option<crate::BalloonControl>,
    /// Live migration of this VM to another VMM.
    pub(crate) migration: Arc<crate::migration::MigrationControl>,
}

impl VmHandle {
    /// Ask the guest to reboot/shut down the way a keyboard user would.
    pub fn send_ctrl_alt_del(&self) {
        self.i8042
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send_ctrl_alt_del();
    }

    /// Press the ACPI power button (guests with an ACPI daemon shut down).
    pub fn press_power_button(&self) {
        let _ = self.power_button.write(1);
    }

    /// Ask the guest to shut down: the ACPI power button and Ctrl-Alt-Del, so that guests
    /// listening to either (systemd, acpid, busybox init) react.
    pub fn request_shutdown(&self) {
        self.press_power_button();
        self.send_ctrl_alt_del();
    }

    /// Stop every vCPU at its next exit (kicked out of KVM_RUN now).
    pub fn pause(&self) {
        self.gate.set(true);
        self.kick_vcpus();
    }

    /// Writes a full snapshot (state file and memory file) of the paused VM.
    pub fn create_snapshot(
        &self,
        state_path: &std::path::Path,
        mem_path: &std::path::Path,
    ) -> Result<crate::snapshot::SnapshotReport, crate::snapshot::SnapshotError> {
        self.snapshot.create(&self.gate, state_path, mem_path)
    }

    /// Live migration of this VM (send, progress, cancel).
    pub fn migration(&self) -> &crate::migration::MigrationControl {
        &self.migration
    }

    /// The VM's balloon, if it has one.
    pub fn balloon(&self) -> Option<&crate::BalloonControl> {
        self.balloon.as_ref()
    }

    /// Guest RAM in MiB (the most a balloon may take).
    pub fn memory_mib(&self) -> u64 {
        self.snapshot.machine.memory >> 20
    }

    /// Let the vCPUs run; devices whose servers a snapshot paused (virtiofsd) get their
    /// queues back first.
    pub fn resume(&self) {
        self.snapshot.devices.resume_external();
        self.gate.set(false);
    }

    /// The VM ends: paused vCPUs are let go so that they see it and return, and nothing
    /// else. Queue servers a snapshot paused (virtiofsd) stay paused: after a suspend or a
    /// migration the requests they had not taken are the restored VM's to run.
    pub(crate) fn release_vcpus_for_exit(&self) {
        self.gate.set(false);
    }

    /// End the VM now (the guest is not asked).
    pub fn stop(&self) {
        self.exit.request(ExitReason::Stopped);
        self.gate.changed.notify_all();
    }

    pub(crate) fn kick_vcpus(&self) {
        for &t in self
            .vcpu_threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            // SAFETY: `t` is the id of a vCPU thread of this process, which lives until
            // Vm::run joins it after clearing this list; pthread_kill only sends a signal.
            unsafe { libc::pthread_kill(t, kick::kick_signal()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_blocks_until_resumed() {
        let gate = Arc::new(PauseGate::default());
        gate.set(true);
        let g = gate.clone();
        let t = std::thread::spawn(move || g.wait_while_paused(|| false, 0, &mut 0, no_save));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!t.is_finished());
        gate.set(false);
        t.join().unwrap();
        // A stopping VM never blocks.
        gate.set(true);
        gate.wait_while_paused(|| true, 0, &mut 0, no_save);
    }

    fn no_save() -> SavedVcpu {
        Err("not saved".into())
    }

    #[test]
    fn paused_vcpus_answer_snapshot_requests() {
        let gate = Arc::new(PauseGate::default());
        let t0 = std::time::Duration::from_secs(5);
        assert!(matches!(
            gate.collect_vcpu_states(1, t0),
            Err(crate::snapshot::SnapshotError::NotPaused)
        ));
        gate.set(true);
        let g = gate.clone();
        let t = std::thread::spawn(move || {
            g.wait_while_paused(|| false, 0, &mut 0, || Err("vCPU 0 says no".into()))
        });
        let err = gate.collect_vcpu_states(1, t0).unwrap_err().to_string();
        assert!(err.contains("vCPU 0 says no"), "{err}");
        // A vCPU that never answers is reported, not waited for forever.
        let err = gate
            .collect_vcpu_states(2, std::time::Duration::from_millis(50))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not stop"), "{err}");
        gate.set(false);
        t.join().unwrap();
    }
}
