//! Building and installing a thread role's seccomp filter with `seccompiler`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// What a thread does, which decides what it may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs one vCPU: KVM_RUN and the port/MMIO exits' device emulation.
    Vcpu,
    /// Serves virtqueues and NIC backends.
    Io,
    /// The I/O thread of a VM with a virtio-vsock device: also accepts host clients and
    /// connects to the host's Unix sockets (`UDS_PATH_<port>`).
    IoVsock,
    /// The VMM's main thread once the VM runs: signals, console input, the VM's end.
    Main,
    /// The REST API server (and its blocking pool).
    Api,
    /// Sends the VM to another VMM (live migration): connects to it, reads guest memory
    /// and KVM's dirty log.
    Migration,
    /// `vessel vhost-user-*`: the thread serving the frontend's messages.
    VhostUserMain,
    /// `vessel vhost-user-*`: the data path of a connection.
    VhostUserWorker,
}

impl Role {
    pub const ALL: [Role; 8] = [
        Role::Vcpu,
        Role::Io,
        Role::IoVsock,
        Role::Main,
        Role::Api,
        Role::Migration,
        Role::VhostUserMain,
        Role::VhostUserWorker,
    ];

    /// The name a violation message gives the thread.
    pub fn name(self) -> &'static str {
        match self {
            Role::Vcpu => "vCPU",
            Role::Io | Role::IoVsock => "I/O",
            Role::Main => "main",
            Role::Api => "API",
            Role::Migration => "migration",
            Role::VhostUserMain => "vhost-user server",
            Role::VhostUserWorker => "vhost-user worker",
        }
    }
}

/// `--seccomp=on|off|log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompMode {
    /// A call outside the allow-list stops the VMM, naming the call.
    #[default]
    On,
    /// No filter.
    Off,
    /// A call outside the allow-list is allowed and logged by the kernel (audit/dmesg).
    Log,
}

impl std::str::FromStr for SeccompMode {
    type Err = SeccompError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on" => Ok(SeccompMode::On),
            "off" => Ok(SeccompMode::Off),
            "log" => Ok(SeccompMode::Log),
            _ => Err(SeccompError::BadMode(s.into())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("invalid seccomp mode '{0}': expected on, off or log")]
    BadMode(String),
    #[error("building the {role} thread's seccomp filter: {source}")]
    Build {
        role: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("installing the {role} thread's seccomp filter: {source}")]
    Install {
        role: &'static str,
        #[source]
        source: seccompiler::Error,
    },
}

/// The BPF program for `role`; a call outside its allow-list gets `mismatch`.
pub fn program(role: Role, mismatch: SeccompAction) -> Result<BpfProgram, SeccompError> {
    let list = crate::filters::allow_list(role);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        list.syscalls.iter().map(|&nr| (nr, Vec::new())).collect();
    if !list.ioctls.is_empty() {
        let build = |source| SeccompError::Build {
            role: role.name(),
            source,
        };
        let mut ioctl_rules = Vec::with_capacity(list.ioctls.len());
        for &request in &list.ioctls {
            let cond = SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                u64::from(request),
            )
            .map_err(build)?;
            ioctl_rules.push(SeccompRule::new(vec![cond]).map_err(build)?);
        }
        rules.insert(libc::SYS_ioctl, ioctl_rules);
    }
    if let Some(flags) = list.sendmsg_flags {
        let build = |source| SeccompError::Build {
            role: role.name(),
            source,
        };
        let cond = SeccompCondition::new(
            2,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            u64::from(flags),
        )
        .map_err(build)?;
        rules.insert(
            libc::SYS_sendmsg,
            vec![SeccompRule::new(vec![cond]).map_err(build)?],
        );
    }
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(|source| SeccompError::Build {
            role: role.name(),
            source,
        })?;
    filter.try_into().map_err(|source| SeccompError::Build {
        role: role.name(),
        source,
    })
}

/// Install `role`'s filter on the calling thread per `mode`.
pub fn install(role: Role, mode: SeccompMode) -> Result<(), SeccompError> {
    crate::sigsys::set_role(role.name());
    let mismatch = match mode {
        SeccompMode::Off => return Ok(()),
        SeccompMode::On => SeccompAction::Trap,
        SeccompMode::Log => SeccompAction::Log,
    };
    let install_err = |source| SeccompError::Install {
        role: role.name(),
        source,
    };
    if crate::filters::allow_list(role).deny_open {
        seccompiler::apply_filter(&deny_open_program(role)?).map_err(install_err)?;
    }
    let bpf = program(role, mismatch)?;
    seccompiler::apply_filter(&bpf).map_err(install_err)
}

/// A filter that answers openat with EACCES and lets everything else through (to the
/// role's own filter, which allows openat so that this answer is the one that counts).
fn deny_open_program(role: Role) -> Result<BpfProgram, SeccompError> {
    let build = |source| SeccompError::Build {
        role: role.name(),
        source,
    };
    let rules = BTreeMap::from([(libc::SYS_openat, Vec::new())]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        TargetArch::x86_64,
    )
    .map_err(build)?;
    filter.try_into().map_err(build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_compiles() {
        for role in Role::ALL {
            let bpf = program(role, SeccompAction::Trap).unwrap();
            assert!(
                !bpf.is_empty() && bpf.len() < 4096,
                "{role:?}: {}",
                bpf.len()
            );
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!("on".parse::<SeccompMode>().unwrap(), SeccompMode::On);
        assert_eq!("log".parse::<SeccompMode>().unwrap(), SeccompMode::Log);
        assert_eq!("off".parse::<SeccompMode>().unwrap(), SeccompMode::Off);
        assert!("yes".parse::<SeccompMode>().is_err());
    }

    #[test]
    fn a_filtered_thread_keeps_allowed_calls_and_is_refused_others() {
        // Use an ERRNO action so the test process survives the forbidden call.
        std::thread::spawn(|| {
            crate::privileges::drop_all().unwrap();
            let bpf = program(Role::Io, SeccompAction::Errno(libc::EPERM as u32)).unwrap();
            seccompiler::apply_filter(&bpf).unwrap();
            // SAFETY: getpid and personality(query) take no pointers.
            unsafe {
                assert!(libc::getpid() > 0);
                assert_eq!(libc::personality(0xffff_ffff), -1);
            }
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EPERM)
            );
            // ioctl with a request the I/O thread may not make.
            let mut n = 0i32;
            // SAFETY: FIONREAD on stdin with a valid out pointer.
            let rc = unsafe { libc::ioctl(0, libc::FIONREAD, &mut n) };
            assert_eq!(rc, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EPERM)
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn api_threads_send_messages_with_descriptors_only_as_vhost_user_does() {
        std::thread::spawn(|| {
            let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            crate::privileges::drop_all().unwrap();
            let bpf = program(Role::Api, SeccompAction::Errno(libc::EPERM as u32)).unwrap();
            seccompiler::apply_filter(&bpf).unwrap();
            let send = |flags| {
                let mut byte = [1u8];
                let mut iov = libc::iovec {
                    iov_base: byte.as_mut_ptr().cast(),
                    iov_len: 1,
                };
                // SAFETY: a zeroed msghdr is valid; it points at one iovec on this stack.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                use std::os::fd::AsRawFd;
                // SAFETY: sendmsg on a socket this test owns, with the message above.
                unsafe { libc::sendmsg(a.as_raw_fd(), &msg, flags) }
            };
            assert_eq!(send(libc::MSG_NOSIGNAL), 1);
            assert_eq!(send(0), -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EPERM)
            );
        })
        .join()
        .unwrap();
    }
}
