//! Starting the container's process inside its root: `chroot`, `chdir`, groups and ids from
//! the OCI spec, then `execve` of the program looked up in the root's `$PATH`.

use std::ffi::CString;
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

/// Starts `spec` in `root` with piped stdin, stdout and stderr.
pub fn spawn(root: &Path, spec: &ProcessSpec) -> Result<Child, ProcessError> {
    let program = resolve_program(root, spec)?;
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
    let mut command = Command::new(&program);
    command
        .arg0(&spec.args[0])
        .args(&spec.args[1..])
        .env_clear()
        .envs(spec.env.iter().filter_map(|e| e.split_once('=')))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before execve and calls only
    // async-signal-safe functions (chroot, chdir, setgroups, setgid, setuid) on values
    // prepared before the fork; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
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
    command
        .spawn()
        .map_err(|source| ProcessError::Spawn { program, source })
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
}
