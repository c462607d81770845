//! How devices ask the VMM to end the VM (power-off, reset, debug-exit), and how the
//! VMM's main loop learns about it.

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Why the VM ends. The first request wins; later ones are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (ACPI S5, KVM system event).
    PowerOff,
    /// The guest asked for a reset (i8042 0xFE, ACPI reset register, KVM system event).
    Reset,
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// `outl(code, 0xf4)` on the isa-debug-exit port: vessel exits with `(code << 1) | 1`.
    DebugExit(u32),
    /// The host asked the VM to stop (SIGINT/SIGTERM, API).
    Stopped,
    /// A vCPU hit something vessel cannot handle; the text is the diagnostic.
    Fault(String),
    /// The VM was migrated to another VMM, which runs it now.
    Migrated,
}

impl ExitReason {
    /// Process exit status for this reason.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::PowerOff
            | ExitReason::Reset
            | ExitReason::TripleFault
            | ExitReason::Stopped
            | ExitReason::Migrated => 0,
            ExitReason::DebugExit(code) => ((code.wrapping_shl(1)) | 1) as i32 & 0xff,
            ExitReason::Fault(_) => FAULT_EXIT_CODE,
        }
    }
}

/// Exit status when the guest faulted or KVM reported an error (even, so it never collides
/// with a debug-exit status, which is always odd).
pub const FAULT_EXIT_CODE: i32 = 4;

struct Inner {
    reason: Mutex<Option<ExitReason>>,
    event: EventFd,
}

/// A shared, cloneable handle: devices and vCPUs request an exit; the main loop waits on
/// [`VmExit::event`].
#[derive(Clone)]
pub struct VmExit(Arc<Inner>);

impl VmExit {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self(Arc::new(Inner {
            reason: Mutex::new(None),
            event: EventFd::new(EFD_NONBLOCK)?,
        })))
    }

    /// Request the VM to end; only the first request is kept.
    pub fn request(&self, reason: ExitReason) {
        let mut r = self.0.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason);
            // A full eventfd counter still wakes the reader, so the result does not matter.
            let _ = self.0.event.write(1);
        }
    }

    /// The reason, once an exit was requested.
    pub fn reason(&self) -> Option<ExitReason> {
        self.0
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Becomes readable when an exit is requested.
    pub fn event(&self) -> &EventFd {
        &self.0.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_wins_and_codes_follow_qemu() {
        let e = VmExit::new().unwrap();
        assert_eq!(e.reason(), None);
        e.request(ExitReason::DebugExit(42));
        e.request(ExitReason::PowerOff);
        assert_eq!(e.reason(), Some(ExitReason::DebugExit(42)));
        assert_eq!(e.event().read().unwrap(), 1);
        assert_eq!(ExitReason::DebugExit(42).exit_code(), 85);
        assert_eq!(ExitReason::DebugExit(0).exit_code(), 1);
        assert_eq!(ExitReason::PowerOff.exit_code(), 0);
        assert_eq!(ExitReason::Fault("x".into()).exit_code() % 2, 0);
    }
}
