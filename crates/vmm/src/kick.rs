//! Kicking vCPU threads out of KVM_RUN: a real-time signal whose handler sets the running
//! vCPU's `immediate_exit`, so a kick that arrives just before KVM_RUN is not lost.

use std::cell::Cell;

use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

thread_local! {
    /// `kvm_run.immediate_exit` of the vCPU this thread runs, or null.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal used to kick vCPU threads.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let ptr = IMMEDIATE_EXIT.with(|c| c.get());
    if !ptr.is_null() {
        // SAFETY: the pointer was set by this thread to its vCPU's kvm_run mapping, which
        // lives as long as the VcpuFd the thread owns; it is cleared before that is dropped.
        // A volatile byte store is async-signal-safe.
        unsafe { std::ptr::write_volatile(ptr, 1) };
    }
}

/// Install the kick handler (once per process; later calls are harmless).
pub fn install_handler() -> std::io::Result<()> {
    register_signal_handler(kick_signal(), handle_kick)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

/// Register the calling thread's vCPU `immediate_exit` byte (null to clear).
pub fn set_thread_immediate_exit(ptr: *mut u8) {
    IMMEDIATE_EXIT.with(|c| c.set(ptr));
}
