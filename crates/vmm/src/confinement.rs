//! Entering a thread's confinement role at its start (crates/confine). A thread that
//! cannot be confined as the policy asks must not run the guest: the VMM stops.

/// Install `role`'s confinement on the calling thread, or end the VMM saying why.
pub(crate) fn enter(role: confine::Role) {
    if let Err(e) = confine::enter(role) {
        eprintln!("vessel: error: confining the {} thread: {e}", role.name());
        std::process::exit(EXIT_CONFINE);
    }
}

/// Exit status when confinement could not be set up (a host error, as `vessel run` uses).
const EXIT_CONFINE: i32 = 6;
