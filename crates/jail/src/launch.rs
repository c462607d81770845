//! Starting the VMM in its jail: a child in a new PID namespace (its PID 1), moved into its
//! cgroup before it runs, the jail built, the user switched; the parent waits, forwards
//! SIGINT/SIGTERM/SIGUSR1 and passes the exit status on.

use std::sync::atomic::{AtomicI32, Ordering};

use crate::cgroup::Cgroup;
use crate::dir::JailDir;
use crate::{Jail, JailError};

/// Signals the VMM acts on (stop, stop, ACPI shutdown), forwarded to it by the parent.
const FORWARDED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1];

/// The VMM's pid for the forwarding handler (0: none yet).
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; pid is our own child.
        unsafe { libc::kill(pid, sig) };
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("the jail must be entered before any thread starts ({0} threads run)")]
    Threads(usize),
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: std::io::Error,
    },
}

fn sys(what: &'static str) -> LaunchError {
    LaunchError::Sys {
        what,
        source: std::io::Error::last_os_error(),
    }
}

/// How the jailed VMM ended.
#[derive(Debug)]
pub struct Ended {
    /// Its exit status (128 + signal number when a signal killed it).
    pub status: i32,
    /// Set when its cgroup could not be removed afterwards.
    pub cleanup: Option<crate::cgroup::CgroupError>,
}

fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

/// Run `vmm` jailed as `jail` describes; returns in the parent once the VMM has exited.
/// `vmm` runs in the child (PID 1 of the new PID namespace, inside the jail) and its
/// return value is the child's exit status. `jail_failed` turns a set-up failure in the
/// child into an exit status after reporting it.
pub(crate) fn run(
    jail: &Jail,
    dir: &JailDir,
    cgroup: Option<&Cgroup>,
    vmm: impl FnOnce() -> i32,
    jail_failed: impl FnOnce(&JailError) -> i32,
) -> Result<Ended, JailError> {
    let threads = thread_count();
    if threads != 1 {
        return Err(LaunchError::Threads(threads).into());
    }
    let mut pipe = [0; 2];
    // SAFETY: pipe2 fills the array with two new fds.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys("cannot create a pipe").into());
    }
    let set = signal_set();
    // SAFETY: sigset_t is plain data, filled in by pthread_sigmask.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: blocking signals in this single thread; the child inherits the mask, so they
    // queue until its event loop reads them.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    // SAFETY: the process is single-threaded (checked above); unshare(CLONE_NEWPID) puts
    // the next child in a new PID namespace, fork is then async-signal-safe to follow.
    let pid = unsafe {
        if libc::unshare(libc::CLONE_NEWPID) != 0 {
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            return Err(sys("cannot create a PID namespace").into());
        }
        libc::fork()
    };
    if pid < 0 {
        // SAFETY: restoring the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        return Err(sys("cannot fork the VMM").into());
    }
    if pid == 0 {
        // SAFETY: closing the write end, inherited by the child.
        unsafe { libc::close(pipe[1]) };
        let code = child(jail, dir, pipe[0], vmm, jail_failed);
        std::process::exit(code);
    }
    // SAFETY: closing the read end in the parent.
    unsafe { libc::close(pipe[0]) };
    let ready = dir
        .write_pid(pid)
        .map_err(JailError::from)
        .and_then(|()| match cgroup {
            Some(c) => c.add(pid).map_err(JailError::from),
            None => Ok(()),
        });
    if let Err(e) = ready {
        // SAFETY: killing and reaping our own child; closing our pipe end.
        unsafe {
            libc::close(pipe[1]);
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
        dir.clear_pid();
        return Err(e);
    }
    CHILD.store(pid, Ordering::Relaxed);
    // SAFETY: installing a handler that only calls kill, then restoring the mask; the
    // write tells the child to go on (it has nothing to lose if it fails: it exits).
    unsafe {
        for s in FORWARDED {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        libc::write(pipe[1], [1u8].as_ptr().cast(), 1);
        libc::close(pipe[1]);
    }
    let status = wait(pid);
    CHILD.store(0, Ordering::Relaxed);
    dir.clear_pid();
    let cleanup = cgroup.and_then(|c| c.remove().err());
    Ok(Ended { status, cleanup })
}

/// Wait for `pid`, through interruptions by forwarded signals; its exit status.
fn wait(pid: i32) -> i32 {
    loop {
        let mut st = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r == pid {
            if libc::WIFEXITED(st) {
                return libc::WEXITSTATUS(st);
            }
            if libc::WIFSIGNALED(st) {
                return 128 + libc::WTERMSIG(st);
            }
            continue;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 128 + libc::SIGKILL;
        }
    }
}

/// The child: wait for the parent's go, build the jail, switch user, run the VMM.
fn child(
    jail: &Jail,
    dir: &JailDir,
    go: libc::c_int,
    vmm: impl FnOnce() -> i32,
    jail_failed: impl FnOnce(&JailError) -> i32,
) -> i32 {
    let mut byte = 0u8;
    // SAFETY: the VMM dies with the parent; read one byte from our pipe end.
    let n = unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let n = libc::read(go, (&mut byte as *mut u8).cast(), 1);
        libc::close(go);
        n
    };
    if n != 1 {
        // The parent failed before letting the VMM start, and reports why.
        return 1;
    }
    // Nothing opened outside the jail reaches the VMM but stdin, stdout and stderr (the
    // jail directory's lock stays with the parent).
    // SAFETY: close_range on fds this process owns; std keeps no fd of its own open.
    if unsafe { libc::syscall(libc::SYS_close_range, 3, u32::MAX, 0) } != 0 {
        return jail_failed(&sys("cannot close inherited file descriptors").into());
    }
    let entered = crate::mounts::enter(
        dir.root(),
        &jail.files,
        &jail.devices,
        jail.new_net,
        jail.ids,
    )
    .map_err(JailError::from)
    .and_then(|()| switch_user(jail.ids));
    match entered {
        Ok(()) => vmm(),
        Err(e) => jail_failed(&e),
    }
}

fn switch_user(ids: Option<(u32, u32)>) -> Result<(), JailError> {
    let Some((uid, gid)) = ids else {
        return Ok(());
    };
    // SAFETY: dropping supplementary groups, then gid, then uid, in this single thread.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(sys("cannot drop supplementary groups").into());
        }
        if libc::setresgid(gid, gid, gid) != 0 {
            return Err(sys("cannot switch group").into());
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            return Err(sys("cannot switch user").into());
        }
    }
    Ok(())
}
