//! The allow-lists of each thread role: the system calls it makes while the VM runs,
//! recorded with `strace -f` on the boot, virtio-blk/net, snapshot, API and vhost-user
//! tests and then reviewed. ioctl is allowed for listed request numbers only.

use crate::seccomp::Role;

/// What a thread of some role may call. `ioctls` are request numbers (the low 32 bits of
/// ioctl's second argument).
pub struct AllowList {
    pub syscalls: Vec<i64>,
    pub ioctls: Vec<u32>,
    /// The role opens no files, but glibc's malloc may open
    /// /proc/sys/vm/overcommit_memory when it first shrinks a thread's heap: openat is
    /// answered EACCES (by a second filter) instead of stopping the VMM.
    pub deny_open: bool,
    /// sendmsg is allowed with these flags (its third argument) only, when set.
    pub sendmsg_flags: Option<u32>,
}

/// The flags of the only sendmsg the API and migration threads make: vhost-user messages
/// to virtiofsd with descriptors attached (vmm-sys-util's `ScmSocket`, used by the `vhost`
/// crate and by vessel's device-state messages, always passes MSG_NOSIGNAL). The
/// descriptors and the socket are not checked (seccomp cannot look into the message);
/// the calls come from vessel's own code on the sockets it connected to virtiofsd.
const VHOST_USER_SENDMSG_FLAGS: u32 = libc::MSG_NOSIGNAL as u32;

/// What every thread needs: the Rust runtime (memory, locks, thread exit, stderr for
/// error messages), and the SIGSYS handler's write and exit_group.
const COMMON: &[i64] = &[
    // The passt backend's handshake timer (crates/net/src/handshake.rs), armed by whichever
    // thread runs the NIC's queues (the vhost-user server thread too, at activation).
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_brk,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_futex,
    libc::SYS_getrandom,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_madvise,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_rseq,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_set_robust_list,
    libc::SYS_sigaltstack,
    libc::SYS_write,
    libc::SYS_writev,
];

/// Reading and writing disk images and log files through descriptors opened at set-up.
const BLOCK_IO: &[i64] = &[
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_ftruncate,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
];

/// Network backends: tap reads/writes, passt's stream socket, the datagram sockets of
/// `internal`/`natnet` switches (peers found by listing the switch directory).
const NET_IO: &[i64] = &[
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_poll,
    libc::SYS_openat,
    libc::SYS_getdents64,
    libc::SYS_unlink,
    libc::SYS_fcntl,
];

const EPOLL: &[i64] = &[
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
];

/// Starting threads (the API's blocking pool, vhost-user workers per connection). A
/// thread inherits its creator's filter, so what a new thread calls to enter its own role
/// is here too: dropping capabilities (capget/capset/prctl, which can only lower them)
/// and adding its filter (seccomp, which can only narrow what is allowed).
const THREADS: &[i64] = &[
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_prctl,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_seccomp,
];

/// Creating snapshot files (state, memory) and reading back what was written.
const FILE_CREATE: &[i64] = &[
    libc::SYS_openat,
    libc::SYS_linkat,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_rename,
    libc::SYS_readlink,
    libc::SYS_fcntl,
];

// KVM request numbers (linux/kvm.h, x86-64 sizes), as strace decodes them.
pub const KVM_RUN: u32 = 0xae80;
pub const KVM_GET_REGS: u32 = 0x8090_ae81;
pub const KVM_SET_REGS: u32 = 0x4090_ae82;
pub const KVM_GET_SREGS: u32 = 0x8138_ae83;
pub const KVM_SET_SREGS: u32 = 0x4138_ae84;
pub const KVM_TRANSLATE: u32 = 0xc018_ae85;
pub const KVM_GET_MSRS: u32 = 0xc008_ae88;
pub const KVM_SET_MSRS: u32 = 0x4008_ae89;
pub const KVM_GET_FPU: u32 = 0x81a0_ae8c;
/// _IOWR(KVMIO, 0x91, struct kvm_cpuid2): the emulator reads the guest's CPUID (XSAVE layout).
pub const KVM_GET_CPUID2: u32 = 0xc008_ae91;
pub const KVM_SET_FPU: u32 = 0x41a0_ae8d;
pub const KVM_GET_LAPIC: u32 = 0x8400_ae8e;
pub const KVM_SET_LAPIC: u32 = 0x4400_ae8f;
pub const KVM_GET_MP_STATE: u32 = 0x8004_ae98;
pub const KVM_SET_MP_STATE: u32 = 0x4004_ae99;
pub const KVM_SET_GUEST_DEBUG: u32 = 0x4048_ae9b;
pub const KVM_GET_VCPU_EVENTS: u32 = 0x8040_ae9f;
pub const KVM_SET_VCPU_EVENTS: u32 = 0x4040_aea0;
pub const KVM_GET_DEBUGREGS: u32 = 0x8080_aea1;
pub const KVM_SET_DEBUGREGS: u32 = 0x4080_aea2;
pub const KVM_GET_XSAVE: u32 = 0x9000_aea4;
pub const KVM_SET_XSAVE: u32 = 0x5000_aea5;
pub const KVM_GET_XCRS: u32 = 0x8188_aea6;
pub const KVM_SET_XCRS: u32 = 0x4188_aea7;
pub const KVM_GET_XSAVE2: u32 = 0x9000_aecf;
pub const KVM_IRQ_LINE: u32 = 0x4008_ae61;
pub const KVM_GET_IRQCHIP: u32 = 0xc208_ae62;
pub const KVM_SET_GSI_ROUTING: u32 = 0x4008_ae6a;
pub const KVM_IRQFD: u32 = 0x4020_ae76;
pub const KVM_IOEVENTFD: u32 = 0x4040_ae79;
pub const KVM_GET_CLOCK: u32 = 0x8030_ae7c;
pub const KVM_GET_PIT2: u32 = 0x8070_ae9f;
/// _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region): dirty logging on and off.
pub const KVM_SET_USER_MEMORY_REGION: u32 = 0x4020_ae46;
/// _IOW(KVMIO, 0x42, struct kvm_dirty_log).
pub const KVM_GET_DIRTY_LOG: u32 = 0x4010_ae42;
/// The tap's offload flags, set when the guest acks virtio-net features.
pub const TUNSETOFFLOAD: u32 = 0x4004_54d0;
/// Whether stdin is a terminal (the console).
pub const TCGETS: u32 = 0x5401;
pub const TCSETS: u32 = 0x5402;
/// set_nonblocking on a socket (the console socket's client).
pub const FIONBIO: u32 = 0x5421;

/// A vCPU's own state, read for snapshots and fault reports and written by the
/// instruction emulator; the VM-wide calls a guest's MMIO/PIO writes lead to (MSI-X
/// routing, BAR moves, INTx, tap offloads).
const VCPU_IOCTLS: &[u32] = &[
    KVM_RUN,
    KVM_GET_REGS,
    KVM_SET_REGS,
    KVM_GET_SREGS,
    KVM_SET_SREGS,
    KVM_TRANSLATE,
    KVM_GET_MSRS,
    KVM_SET_MSRS,
    KVM_GET_FPU,
    // The instruction emulator (kvm_pvm hosts) writes back what it executed: FPU/SSE and
    // XSAVE state (fxrstor, xrstor, cmpxchg16b's flags...), XCR0, debug registers.
    KVM_SET_FPU,
    KVM_GET_CPUID2,
    KVM_GET_LAPIC,
    KVM_SET_LAPIC,
    KVM_GET_MP_STATE,
    KVM_SET_MP_STATE,
    KVM_SET_GUEST_DEBUG,
    KVM_GET_VCPU_EVENTS,
    KVM_SET_VCPU_EVENTS,
    KVM_GET_DEBUGREGS,
    KVM_SET_DEBUGREGS,
    KVM_GET_XSAVE,
    KVM_SET_XSAVE,
    KVM_GET_XSAVE2,
    KVM_GET_XCRS,
    KVM_SET_XCRS,
    KVM_IRQ_LINE,
    KVM_SET_GSI_ROUTING,
    KVM_IRQFD,
    KVM_IOEVENTFD,
    TUNSETOFFLOAD,
];

/// The I/O thread raises INTx lines and may set tap offloads.
const IO_IOCTLS: &[u32] = &[KVM_IRQ_LINE, KVM_IRQFD, TUNSETOFFLOAD];

/// With vsock, it also makes the Unix sockets it accepts and connects non-blocking.
const IO_VSOCK_IOCTLS: &[u32] = &[KVM_IRQ_LINE, KVM_IRQFD, TUNSETOFFLOAD, FIONBIO];

/// VM-wide state a snapshot saves from the API thread.
const API_IOCTLS: &[u32] = &[KVM_GET_CLOCK, KVM_GET_PIT2, KVM_GET_IRQCHIP, KVM_IRQ_LINE];

/// Live migration: the VM-wide state a snapshot saves, and KVM's dirty page log.
const MIGRATION_IOCTLS: &[u32] = &[
    KVM_GET_CLOCK,
    KVM_GET_PIT2,
    KVM_GET_IRQCHIP,
    KVM_SET_USER_MEMORY_REGION,
    KVM_GET_DIRTY_LOG,
];

/// The allow-list of `role`.
pub fn allow_list(role: Role) -> AllowList {
    let mut syscalls: Vec<i64> = COMMON.to_vec();
    let (extra, ioctls): (Vec<&[i64]>, &[u32]) = match role {
        // Device emulation of port/MMIO exits runs here (virtio config, serial output to
        // its file, tap offloads); the kick signal interrupts KVM_RUN.
        Role::Vcpu => (
            vec![
                BLOCK_IO,
                EPOLL,
                // Serial output also goes to a background VM's console client. A
                // virtio-fs device's DRIVER_OK and reset talk vhost-user to virtiofsd
                // (messages with descriptors, acknowledged replies).
                &[
                    libc::SYS_tgkill,
                    libc::SYS_fcntl,
                    libc::SYS_sendto,
                    libc::SYS_sendmsg,
                    libc::SYS_recvmsg,
                ],
            ],
            VCPU_IOCTLS,
        ),
        // A nat NIC's run-time forwards: accepting on the listeners the CLI handed over
        // (crates/net/src/forward_relay.rs) and half-closing host connections.
        Role::Io => (
            vec![
                BLOCK_IO,
                NET_IO,
                EPOLL,
                &[libc::SYS_accept4, libc::SYS_shutdown],
            ],
            IO_IOCTLS,
        ),
        // vsock's host side: accepting clients of UDS_PATH and connecting to
        // UDS_PATH_<port> (Unix stream sockets; landlock still limits which files).
        Role::IoVsock => (
            vec![
                BLOCK_IO,
                NET_IO,
                EPOLL,
                &[
                    libc::SYS_socket,
                    libc::SYS_connect,
                    libc::SYS_accept4,
                    libc::SYS_shutdown,
                    libc::SYS_getsockopt,
                    libc::SYS_setsockopt,
                ],
            ],
            IO_VSOCK_IOCTLS,
        ),
        // The event loop: signals, stdin or the console socket, kicking vCPUs; at the end
        // it stops NIC helpers (passt) and writes the exit note of a background VM.
        Role::Main => (
            vec![
                BLOCK_IO,
                NET_IO,
                EPOLL,
                FILE_CREATE,
                &[
                    libc::SYS_tgkill,
                    libc::SYS_kill,
                    libc::SYS_wait4,
                    libc::SYS_waitid,
                    libc::SYS_rt_sigtimedwait,
                    libc::SYS_accept4,
                    libc::SYS_shutdown,
                    // The console socket's client.
                    libc::SYS_setsockopt,
                    libc::SYS_getsockopt,
                ],
            ],
            &[TCGETS, TCSETS, FIONBIO],
        ),
        // Trusted local clients over a unix socket; snapshots and vCPU pause/resume.
        Role::Api => (
            vec![
                BLOCK_IO,
                EPOLL,
                THREADS,
                FILE_CREATE,
                &[
                    libc::SYS_accept4,
                    libc::SYS_recvfrom,
                    libc::SYS_sendto,
                    libc::SYS_shutdown,
                    libc::SYS_setsockopt,
                    libc::SYS_getsockopt,
                    libc::SYS_tgkill,
                    libc::SYS_timerfd_create,
                    libc::SYS_timerfd_settime,
                    libc::SYS_socketpair,
                    // A run-time port forward: its listening socket arrives with the
                    // request (SCM_RIGHTS) and is checked (address, kind) and made
                    // non-blocking before the NIC's relay takes it.
                    libc::SYS_recvmsg,
                    libc::SYS_getsockname,
                    libc::SYS_fcntl,
                    // A snapshot of a VM with shares: vhost-user messages to virtiofsd
                    // (descriptors attached; sendmsg with MSG_NOSIGNAL only, see
                    // VHOST_USER_SENDMSG_FLAGS) and its state read from a pipe.
                    libc::SYS_sendmsg,
                    libc::SYS_pipe2,
                    libc::SYS_poll,
                    // A root VMM switching user later: glibc runs set*id in every thread.
                    libc::SYS_setresuid,
                    libc::SYS_setresgid,
                    libc::SYS_setgroups,
                ],
            ],
            API_IOCTLS,
        ),
        // Live migration: connecting to the receiver (unix or TCP stream socket, IP
        // literals: no name lookup), the stream, pausing and kicking the vCPUs.
        Role::Migration => (
            vec![
                BLOCK_IO,
                &[
                    libc::SYS_socket,
                    libc::SYS_connect,
                    libc::SYS_sendto,
                    libc::SYS_recvfrom,
                    libc::SYS_setsockopt,
                    libc::SYS_getsockopt,
                    libc::SYS_shutdown,
                    libc::SYS_fcntl,
                    libc::SYS_poll,
                    libc::SYS_tgkill,
                    // A VM with shares: vhost-user messages to virtiofsd (descriptors
                    // attached; sendmsg with MSG_NOSIGNAL only, see
                    // VHOST_USER_SENDMSG_FLAGS) and its state read from a pipe.
                    libc::SYS_sendmsg,
                    libc::SYS_recvmsg,
                    libc::SYS_pipe2,
                ],
            ],
            MIGRATION_IOCTLS,
        ),
        // The vhost-user server: frontend messages (with fds), guest memory maps, one
        // worker thread per connection.
        Role::VhostUserMain => (
            vec![
                BLOCK_IO,
                EPOLL,
                THREADS,
                &[
                    libc::SYS_accept4,
                    libc::SYS_recvmsg,
                    libc::SYS_sendmsg,
                    libc::SYS_recvfrom,
                    libc::SYS_sendto,
                    libc::SYS_poll,
                    libc::SYS_fcntl,
                    libc::SYS_setsockopt,
                    libc::SYS_dup,
                    // SIGPIPE is ignored around each connection.
                    libc::SYS_rt_sigaction,
                    // Its socket goes when it stops.
                    libc::SYS_unlink,
                    // A NAT backend stops its passt helper when it ends.
                    libc::SYS_shutdown,
                    libc::SYS_kill,
                    libc::SYS_wait4,
                    libc::SYS_waitid,
                ],
            ],
            &[],
        ),
        Role::VhostUserWorker => (vec![BLOCK_IO, NET_IO, EPOLL], &[]),
    };
    for list in extra {
        syscalls.extend_from_slice(list);
    }
    syscalls.sort_unstable();
    syscalls.dedup();
    let deny_open = !syscalls.contains(&libc::SYS_openat);
    if deny_open {
        syscalls.push(libc::SYS_openat);
        syscalls.sort_unstable();
    }
    let sendmsg_flags =
        matches!(role, Role::Api | Role::Migration).then_some(VHOST_USER_SENDMSG_FLAGS);
    AllowList {
        syscalls,
        ioctls: ioctls.to_vec(),
        deny_open,
        sendmsg_flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_role_may_exec_fork_or_open_sockets() {
        for role in Role::ALL {
            let list = allow_list(role);
            let sockets_allowed = matches!(role, Role::IoVsock | Role::Migration);
            for forbidden in [
                libc::SYS_execve,
                libc::SYS_execveat,
                libc::SYS_fork,
                libc::SYS_vfork,
                libc::SYS_ptrace,
                libc::SYS_socket,
                libc::SYS_connect,
                libc::SYS_mount,
                libc::SYS_personality,
                libc::SYS_ioctl,
            ] {
                if sockets_allowed && [libc::SYS_socket, libc::SYS_connect].contains(&forbidden) {
                    continue;
                }
                assert!(
                    !list.syscalls.contains(&forbidden),
                    "{role:?} allows {}",
                    crate::syscalls::name(forbidden).unwrap_or("?")
                );
            }
        }
    }

    #[test]
    fn vcpus_run_and_the_sigsys_handler_can_report() {
        let list = allow_list(Role::Vcpu);
        assert!(list.ioctls.contains(&KVM_RUN));
        assert!(list.syscalls.contains(&libc::SYS_write));
        assert!(list.syscalls.contains(&libc::SYS_exit_group));
        assert!(list.deny_open);
        assert!(!allow_list(Role::Io).deny_open);
        assert!(!allow_list(Role::Io).ioctls.contains(&KVM_RUN));
    }
}
