//! Confinement of the VMM once the VM is set up: each thread role gets its own seccomp
//! allow-list, the process loses every capability and gains `no_new_privs`, landlock
//! limits the filesystem to the VM's own files, and a VMM started as root may switch to
//! another user.
//!
//! The binary describes what it wants with [`Policy`] and calls [`lock_down`] on the thread
//! that set the VM up, after the last privileged step and before the VM's threads start
//! (threads inherit capabilities, `no_new_privs` and the landlock domain). Every thread then
//! calls [`enter`] with its [`Role`] when it starts: it installs that role's seccomp filter.
//! Without a policy (library tests, tools) [`enter`] does nothing.

pub mod filters;
pub mod fs;
pub mod hooks;
pub mod privileges;
pub mod seccomp;
pub mod sigsys;
pub mod syscalls;

use std::sync::OnceLock;

pub use fs::FsRules;
pub use seccomp::{Role, SeccompMode};

/// What confinement a VMM process gets.
#[derive(Debug, Clone)]
pub struct Policy {
    pub seccomp: SeccompMode,
    /// Whether [`lock_down`] limits the filesystem with landlock.
    pub landlock: bool,
    /// User to become after set-up (only when started as root).
    pub user: Option<privileges::User>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a confinement policy was already set for this process")]
    PolicySet,
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error(transparent)]
    Privileges(#[from] privileges::PrivilegeError),
    #[error(transparent)]
    Fs(#[from] fs::FsError),
    #[error(transparent)]
    Sigsys(#[from] sigsys::SigsysError),
}

static POLICY: OnceLock<Policy> = OnceLock::new();

/// Record the process's policy (once) and install the SIGSYS handler that names a
/// forbidden system call.
pub fn set_policy(policy: Policy) -> Result<(), Error> {
    if policy.seccomp == SeccompMode::On {
        sigsys::install()?;
    }
    POLICY.set(policy).map_err(|_| Error::PolicySet)
}

/// The policy set for this process, if any.
pub fn policy() -> Option<&'static Policy> {
    POLICY.get()
}

/// End of set-up, on the thread that did it: switch user, limit the filesystem to `files`
/// (when the policy asks for landlock), drop every capability and set `no_new_privs`.
/// Threads started afterwards inherit all of this; threads started before are not
/// landlocked and must call [`enter`], which drops their capabilities too.
pub fn lock_down(files: &FsRules) -> Result<(), Error> {
    let Some(policy) = POLICY.get() else {
        return Ok(());
    };
    // The paths are opened before the user switch: the new user may not reach them.
    let ruleset = if policy.landlock {
        Some(fs::prepare(files)?)
    } else {
        None
    };
    privileges::drop_bounding()?;
    if let Some(user) = &policy.user {
        privileges::switch_user(user)?;
    }
    privileges::drop_all()?;
    if let Some(ruleset) = ruleset {
        fs::enforce(ruleset)?;
    }
    Ok(())
}

/// Start of a thread playing `role`: no capabilities, `no_new_privs`, and the role's
/// seccomp filter (per the policy's mode). Does nothing without a policy.
pub fn enter(role: Role) -> Result<(), Error> {
    let Some(policy) = POLICY.get() else {
        return Ok(());
    };
    sigsys::set_role(role.name());
    privileges::drop_all()?;
    seccomp::install(role, policy.seccomp)?;
    Ok(())
}
