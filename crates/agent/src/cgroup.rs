//! A container's resource limits in the guest: a cgroup v2 group of its own under the
//! guest's cgroup root, with `memory.max`, `memory.low` and `cpu.max` set; the container's
//! process and its exec'd processes join it before they run their program.

use std::path::{Path, PathBuf};

use crate::protocol::Limits;

/// Where the guest's cgroup v2 hierarchy is mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// Errors setting limits up.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("mount cgroup2 at {ROOT}: {0}")]
    Mount(nix::Error),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

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
    if let Some(max) = limits.memory_max {
        write(&dir.join("memory.max"), &max.to_string())?;
    }
    if let Some(low) = limits.memory_low {
        write(&dir.join("memory.low"), &low.to_string())?;
    }
    if let Some((quota, period)) = limits.cpu_max {
        write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
    }
    Ok(dir)
}

/// [`create_in`] the guest's cgroup root.
pub fn create(name: &str, limits: &Limits) -> Result<PathBuf, CgroupError> {
    create_in(Path::new(ROOT), name, limits)
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
}
