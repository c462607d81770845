//! A container's resources in the guest: a cgroup v2 group of its own under the guest's
//! cgroup root, with `memory.max`, `memory.low` and `cpu.max` set when the container has
//! limits; the container's process and its exec'd processes join it before they run their
//! program, and the group's counters are the container's stats.

use std::path::{Path, PathBuf};

use crate::protocol::{CgroupStats, Limits};

/// Where the guest's cgroup v2 hierarchy is mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

/// Errors setting limits up.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("mount cgroup2 at {ROOT}: {0}")]
    Mount(nix::Error),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: the kernel did not report the group {1} within {FREEZE_WAIT:?}")]
    Freeze(PathBuf, &'static str),
    #[error(transparent)]
    Limits(#[from] crate::protocol::ProtocolError),
}

/// How long a freeze or thaw may take to be reported in `cgroup.events`.
pub const FREEZE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|e| CgroupError::Io(path.to_path_buf(), e))
}

/// The group `vessel-<name>` under `root` with `limits` set (cgroup2 mounted at `root` and
/// the memory and cpu controllers enabled for its children first).
pub fn create_in(root: &Path, name: &str, limits: &Limits) -> Result<PathBuf, CgroupError> {
    if !root.join("cgroup.controllers").exists() {
        nix::mount::mount(
            Some("cgroup2"),
            root,
            Some("cgroup2"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(CgroupError::Mount)?;
    }
    write(&root.join("cgroup.subtree_control"), "+memory +cpu")?;
    let dir = root.join(format!("vessel-{name}"));
    std::fs::create_dir_all(&dir).map_err(|e| CgroupError::Io(dir.clone(), e))?;
    set_limits(&dir, limits)?;
    Ok(dir)
}

/// Sets the limits `limits` gives on the group at `dir` (the others stay as they are).
pub fn set_limits(dir: &Path, limits: &Limits) -> Result<(), CgroupError> {
    limits.validate()?;
    if let Some(max) = limits.memory_max {
        write(&dir.join("memory.max"), &max.to_string())?;
    }
    if let Some(low) = limits.memory_low {
        write(&dir.join("memory.low"), &low.to_string())?;
    }
    if let Some((quota, period)) = limits.cpu_max {
        write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
    }
    Ok(())
}

/// Freezes or thaws every process of the group at `dir` and waits until the kernel says
/// it is done (`frozen 1` or `frozen 0` in `cgroup.events`).
pub fn freeze(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let events = dir.join("cgroup.events");
    let deadline = std::time::Instant::now() + FREEZE_WAIT;
    loop {
        let text =
            std::fs::read_to_string(&events).map_err(|e| CgroupError::Io(events.clone(), e))?;
        if text.lines().any(|l| l.trim() == want) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            let what = if frozen { "frozen" } else { "thawed" };
            return Err(CgroupError::Freeze(dir.to_path_buf(), what));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The counters of the group at `dir`. A file or key the kernel does not have reads as 0
/// (the pids controller, for one, is not enabled for the group); "max" as `u64::MAX`.
pub fn read_stats(dir: &Path) -> CgroupStats {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    let single = |file: &str| parse_value(read(file).trim()).unwrap_or(0);
    let (cpu_stat, memory_stat) = (read("cpu.stat"), read("memory.stat"));
    let (cpu, memory) = (keyed(&cpu_stat), keyed(&memory_stat));
    let cpu = |key: &str| cpu.get(key).copied().unwrap_or(0);
    let mem = |key: &str| memory.get(key).copied().unwrap_or(0);
    CgroupStats {
        cpu_usage_usec: cpu("usage_usec"),
        cpu_user_usec: cpu("user_usec"),
        cpu_system_usec: cpu("system_usec"),
        cpu_nr_periods: cpu("nr_periods"),
        cpu_nr_throttled: cpu("nr_throttled"),
        cpu_throttled_usec: cpu("throttled_usec"),
        memory_usage: single("memory.current"),
        memory_limit: single("memory.max"),
        anon: mem("anon"),
        file: mem("file"),
        kernel_stack: mem("kernel_stack"),
        slab: mem("slab"),
        sock: mem("sock"),
        shmem: mem("shmem"),
        file_mapped: mem("file_mapped"),
        file_dirty: mem("file_dirty"),
        inactive_anon: mem("inactive_anon"),
        active_anon: mem("active_anon"),
        inactive_file: mem("inactive_file"),
        active_file: mem("active_file"),
        unevictable: mem("unevictable"),
        pgfault: mem("pgfault"),
        pgmajfault: mem("pgmajfault"),
        pids_current: single("pids.current"),
        pids_limit: single("pids.max"),
    }
}

/// A cgroup file's value: a number, or "max".
fn parse_value(text: &str) -> Option<u64> {
    match text {
        "max" => Some(u64::MAX),
        _ => text.parse().ok(),
    }
}

/// The "key value" lines of a flat-keyed cgroup file (`cpu.stat`, `memory.stat`).
fn keyed(text: &str) -> std::collections::HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key, parse_value(value.trim())?))
        })
        .collect()
}

/// Removes the group once its processes are gone (a group with processes stays).
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_gets_the_limits_and_the_controllers_are_enabled() {
        // A stand-in for the cgroup root: the files the kernel would have.
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory").unwrap();
        let limits = Limits {
            memory_max: Some(200 << 20),
            memory_low: None,
            cpu_max: Some((50_000, 100_000)),
        };
        let dir = create_in(root.path(), "c1", &limits).unwrap();
        assert_eq!(dir, root.path().join("vessel-c1"));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            read(&root.path().join("cgroup.subtree_control")),
            "+memory +cpu"
        );
        assert_eq!(read(&dir.join("memory.max")), "209715200");
        assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
        assert!(!dir.join("memory.low").exists());
    }

    #[test]
    fn updates_set_only_the_limits_given_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        std::fs::write(dir.path().join("cpu.max"), "50000 100000").unwrap();
        let memory = Limits {
            memory_max: Some(300 << 20),
            ..Limits::default()
        };
        set_limits(dir.path(), &memory).unwrap();
        assert_eq!(read("memory.max"), "314572800");
        assert_eq!(read("cpu.max"), "50000 100000", "left as it was");
        let tiny = Limits {
            memory_max: Some(4096),
            ..Limits::default()
        };
        assert!(matches!(
            set_limits(dir.path(), &tiny),
            Err(CgroupError::Limits(_))
        ));
        assert_eq!(read("memory.max"), "314572800");
    }

    #[test]
    fn a_freeze_waits_for_the_kernels_word_and_says_when_it_does_not_come() {
        let dir = tempfile::tempdir().unwrap();
        // The kernel's answer, there already (as after a quick freeze).
        std::fs::write(dir.path().join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        freeze(dir.path(), true).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cgroup.freeze")).unwrap(),
            "1"
        );
        // The thaw is never reported: an error naming the group, after FREEZE_WAIT.
        assert!(matches!(
            freeze(dir.path(), false),
            Err(CgroupError::Freeze(_, "thawed"))
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cgroup.freeze")).unwrap(),
            "0"
        );
    }

    #[test]
    fn stats_come_from_the_group_s_files_and_missing_ones_read_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let write = |f: &str, text: &str| std::fs::write(dir.path().join(f), text).unwrap();
        write(
            "cpu.stat",
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 7\n\
             nr_throttled 2\nthrottled_usec 90\nnot a line\n",
        );
        write("memory.current", "4096\n");
        write("memory.max", "max\n");
        write(
            "memory.stat",
            "anon 8192\nfile 12288\ninactive_file 4096\npgfault x\n",
        );
        let stats = read_stats(dir.path());
        assert_eq!(
            (
                stats.cpu_usage_usec,
                stats.cpu_user_usec,
                stats.cpu_system_usec
            ),
            (1500, 1000, 500)
        );
        assert_eq!((stats.cpu_nr_periods, stats.cpu_nr_throttled), (7, 2));
        assert_eq!(stats.cpu_throttled_usec, 90);
        assert_eq!((stats.memory_usage, stats.memory_limit), (4096, u64::MAX));
        assert_eq!(
            (stats.anon, stats.file, stats.inactive_file),
            (8192, 12288, 4096)
        );
        // A value that is not a number, and files the group lacks.
        assert_eq!(
            (stats.pgfault, stats.pids_current, stats.pids_limit),
            (0, 0, 0)
        );
    }
}
