//! Controlling a running VM from other threads (the API server, signal handlers): pause
//! and resume the vCPUs, press Ctrl-Alt-Del, stop.

use std::sync::{Arc, Condvar, Mutex};

use devices::i8042::I8042;
use devices::{ExitReason, VmExit};
use vmm_sys_util::eventfd::EventFd;

use crate::kick;

/// Whether vCPUs may run; vCPU threads wait here while the VM is paused.
#[derive(Default)]
pub struct PauseGate {
    paused: Mutex<bool>,
    changed: Condvar,
}

impl PauseGate {
    /// Block while paused, unless `stopping()` says the VM is ending.
    pub fn wait_while_paused(&self, stopping: impl Fn() -> bool) {
        let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        while *paused && !stopping() {
            paused = self.changed.wait(paused).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn set(&self, value: bool) {
        *self.paused.lock().unwrap_or_else(|p| p.into_inner()) = value;
        self.changed.notify_all();
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

    pub fn resume(&self) {
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
        let t = std::thread::spawn(move || g.wait_while_paused(|| false));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!t.is_finished());
        gate.set(false);
        t.join().unwrap();
        // A stopping VM never blocks.
        gate.set(true);
        gate.wait_while_paused(|| true);
    }
}
