//! Test hooks (feature `test-hooks`, never in release builds): a guest write to
//! [`HOOK_PORT`] makes the vCPU thread do what `VESSEL_TEST_HOOK` says, so tests can prove
//! that a guest-reachable path is confined:
//!
//! * `syscall`: call personality(2), which no role allows (seccomp stops the VMM);
//! * `open:PATH`: open PATH read-only and report the outcome on stderr (landlock denies
//!   files outside the VM's set).

/// An I/O port no device uses.
pub const HOOK_PORT: u16 = 0x5e5;

/// Run the hook, if compiled in and asked for by the environment. Returns whether it ran.
#[cfg(feature = "test-hooks")]
pub fn port_write() -> bool {
    let Ok(what) = std::env::var("VESSEL_TEST_HOOK") else {
        return false;
    };
    if what == "syscall" {
        // SAFETY: personality with 0xffffffff only queries the persona.
        unsafe { libc::personality(0xffff_ffff) };
    } else if let Some(path) = what.strip_prefix("open:") {
        match std::fs::File::open(path) {
            Ok(_) => eprintln!("vessel: test hook: opened {path}"),
            Err(e) => eprintln!("vessel: test hook: cannot open {path}: {e}"),
        }
    }
    true
}

/// Without the feature there is no hook.
#[cfg(not(feature = "test-hooks"))]
pub fn port_write() -> bool {
    false
}
