//! Starting the container's process inside its root: `chroot`, `chdir`, groups and ids from
//! the OCI spec, then `execve` of the program looked up in the root's `$PATH`.

use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::protocol::ProcessSpec;

/// The `PATH` used to find the program when the spec's environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors starting the process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{0}: executable file not found in the container's $PATH")]
    NotFound(String),
    #[error("unknown resource limit {0:?}")]
    Rlimit(String),
    #[error("a NUL byte in {0}")]
    Nul(&'static str),
    #[error("open a terminal for the process: {0}")]
    Pty(nix::Error),
    #[error("the process's terminal: {0}")]
    Terminal(std::io::Error),
    #[error("join the container's cgroup {0}: {1}")]
    Cgroup(String, std::io::Error),
    #[error("start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

/// Where `args[0]` is, as a path inside `root`: as given when it has a `/`, else the first
/// regular file of that name in the spec's `$PATH`.
pub fn resolve_program(root: &Path, spec: &ProcessSpec) -> Result<String, ProcessError> {
    let name = spec.args.first().map(String::as_str).unwrap_or_default();
    if name.contains('/') {
        return Ok(name.to_string());
    }
    let path = spec
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| format!("{}/{name}", dir.trim_end_matches('/')))
        .find(|candidate| inside(root, candidate).is_file())
        .ok_or_else(|| ProcessError::NotFound(name.to_string()))
}

/// `path` (absolute, inside the container) as a host path under `root`.
fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// A started process and, when it runs on a terminal, the terminal's master (the host's
/// end of its stdin, stdout and stderr; otherwise they are the child's pipes).
pub struct Started {
    pub child: Child,
    pub pty: Option<File>,
    /// The cgroup it runs in (its exec'd processes join it too).
    pub cgroup: Option<PathBuf>,
}

/// The process's stdin, stdout and stderr: one new terminal's slave, or three pipes.
fn stdio(terminal: bool) -> Result<(Option<File>, [Stdio; 3]), ProcessError> {
    if !terminal {
        return Ok((None, [Stdio::piped(), Stdio::piped(), Stdio::piped()]));
    }
    let pty = nix::pty::openpty(None, None).map_err(ProcessError::Pty)?;
    let slave = || -> Result<Stdio, ProcessError> {
        let fd = pty.slave.try_clone().map_err(ProcessError::Terminal)?;
        Ok(Stdio::from(fd))
    };
    let slaves = [slave()?, slave()?, slave()?];
    Ok((Some(File::from(pty.master)), slaves))
}

/// Starts `spec` in `root`: on a terminal of its own (its session's controlling terminal)
/// when `spec.terminal`, else with piped stdin, stdout and stderr; in the cgroup `cgroup`
/// (a directory of the guest's cgroup v2 hierarchy) when there is one.
pub fn spawn(
    root: &Path,
    spec: &ProcessSpec,
    cgroup: Option<&Path>,
) -> Result<Started, ProcessError> {
    let program = resolve_program(root, spec)?;
    // Opened before the fork: the child joins the group by writing to it. The kernel makes
    // the file with the group; `create` only matters where the hierarchy is a stand-in
    // directory (the tests'), as cgroupfs refuses new files.
    let procs = cgroup
        .map(|dir| {
            let path = dir.join("cgroup.procs");
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| ProcessError::Cgroup(path.display().to_string(), e))
        })
        .transpose()?;
    let procs_fd = procs.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    let c_root =
        CString::new(root.as_os_str().as_bytes()).map_err(|_| ProcessError::Nul("root"))?;
    let c_cwd = CString::new(spec.cwd.as_bytes()).map_err(|_| ProcessError::Nul("cwd"))?;
    let groups: Vec<libc::gid_t> = spec.additional_gids.clone();
    let rlimits = spec
        .rlimits
        .iter()
        .map(|r| {
            let resource = rlimit_resource(&r.resource)
                .ok_or_else(|| ProcessError::Rlimit(r.resource.clone()))?;
            Ok((
                resource,
                libc::rlimit {
                    rlim_cur: r.soft,
                    rlim_max: r.hard,
                },
            ))
        })
        .collect::<Result<Vec<_>, ProcessError>>()?;
    let no_new_privs = spec.no_new_privileges;
    let (uid, gid) = (spec.uid, spec.gid);
    let terminal = spec.terminal;
    let (pty, [stdin, stdout, stderr]) = stdio(terminal)?;
    let mut command = Command::new(&program);
    command
        .arg0(&spec.args[0])
        .args(&spec.args[1..])
        .env_clear()
        .envs(spec.env.iter().filter_map(|e| e.split_once('=')))
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: the closure runs in the forked child before execve and calls only
    // async-signal-safe functions (write, setsid, ioctl, setrlimit, prctl, chroot, chdir,
    // setgroups, setgid, setuid) on values prepared before the fork; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            if let Some(fd) = procs_fd {
                // "0" moves the writing process into the group.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if terminal {
                // A session of its own with the terminal (its stdin) as controlling tty.
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
            }
            for (resource, limit) in &rlimits {
                check(libc::setrlimit(*resource, limit))?;
            }
            if no_new_privs {
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            }
            check(libc::chroot(c_root.as_ptr()))?;
            check(libc::chdir(c_cwd.as_ptr()))?;
            check(libc::setgroups(groups.len(), groups.as_ptr()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))
        });
    }
    let child = command
        .spawn()
        .map_err(|source| ProcessError::Spawn { program, source })?;
    if let Some(adj) = spec.oom_score_adj {
        // Set from outside: the child may have exec'd already, which does not matter.
        let path = format!("/proc/{}/oom_score_adj", child.id());
        if let Err(e) = std::fs::write(&path, adj.to_string()) {
            println!("vessel-agent: {path}: {e}");
        }
    }
    let cgroup = cgroup.map(Path::to_path_buf);
    Ok(Started { child, pty, cgroup })
}

/// Sets the size of the terminal whose master is `pty`.
pub fn resize(pty: &File, rows: u16, cols: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which points at a live local;
    // the descriptor is the terminal master `pty` owns.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(pty),
            libc::TIOCSWINSZ,
            &size,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The resource number of an OCI `RLIMIT_*` name.
pub fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    let resource = match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    };
    Some(resource)
}

/// The exit status the shim reports for a wait status: the exit code, or 128 + the signal.
pub fn exit_status(status: nix::sys::wait::WaitStatus) -> Option<u32> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => Some(code as u32 & 0xff),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as u32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(args: &[&str], env: &[&str]) -> ProcessSpec {
        ProcessSpec {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            rlimits: vec![],
            no_new_privileges: false,
            terminal: false,
            oom_score_adj: None,
        }
    }

    #[test]
    fn rlimit_names_map_to_resources() {
        assert_eq!(rlimit_resource("RLIMIT_NOFILE"), Some(libc::RLIMIT_NOFILE));
        assert_eq!(rlimit_resource("RLIMIT_BOGUS"), None);
        assert_eq!(rlimit_resource("nofile"), None);
    }

    #[test]
    fn programs_are_found_in_the_roots_path_only() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        std::fs::write(root.path().join("bin/tool"), b"").unwrap();
        let found = resolve_program(root.path(), &spec(&["tool"], &["PATH=/usr/bin:/bin"]));
        assert_eq!(found.unwrap(), "/bin/tool");
        let default = resolve_program(root.path(), &spec(&["tool"], &[]));
        assert_eq!(default.unwrap(), "/bin/tool");
        let err = resolve_program(root.path(), &spec(&["sh"], &["PATH=/usr/bin"])).unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
        let relative_dirs = spec(&["tool"], &["PATH=bin:."]);
        assert!(resolve_program(root.path(), &relative_dirs).is_err());
        let explicit = resolve_program(root.path(), &spec(&["/opt/x"], &[]));
        assert_eq!(explicit.unwrap(), "/opt/x");
    }

    #[test]
    fn exit_codes_and_signals_map_to_shell_statuses() {
        use nix::sys::signal::Signal;
        use nix::sys::wait::WaitStatus;
        use nix::unistd::Pid;
        let pid = Pid::from_raw(7);
        assert_eq!(exit_status(WaitStatus::Exited(pid, 3)), Some(3));
        let killed = WaitStatus::Signaled(pid, Signal::SIGTERM, false);
        assert_eq!(exit_status(killed), Some(143));
        assert_eq!(exit_status(WaitStatus::StillAlive), None);
    }

    #[test]
    fn the_process_joins_its_cgroup_before_it_runs() {
        if !nix::unistd::Uid::effective().is_root() {
            println!("skipped: chroot needs root");
            return;
        }
        // A stand-in group: the child writes "0" (itself) to its cgroup.procs.
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new("/");
        std::fs::write(dir.path().join("cgroup.procs"), "").unwrap();
        let mut started = spawn(
            root,
            &spec(&["true"], &["PATH=/bin:/usr/bin"]),
            Some(dir.path()),
        )
        .unwrap();
        started.child.wait().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cgroup.procs")).unwrap(),
            "0"
        );
        assert_eq!(started.cgroup.as_deref(), Some(dir.path()));
        let missing = dir.path().join("gone");
        let err = spawn(root, &spec(&["true"], &[]), Some(&missing))
            .err()
            .unwrap();
        assert!(err.to_string().contains("cgroup"), "{err}");
    }
}
