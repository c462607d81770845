//! cgroup v2 limits for a jailed VMM: validate `KEY=VALUE` settings, create
//! `<cgroup2 mount>/vessel/<id>`, write the limits, move the VMM in, remove it at the end.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The cgroup directory every jailed VMM's cgroup is created in, under the cgroup2 mount.
pub const PARENT: &str = "vessel";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid cgroup setting '{0}': expected KEY=VALUE, e.g. memory.max=1G")]
    Syntax(String),
    #[error(
        "unknown cgroup key '{0}': supported are cpu.max, cpu.weight, memory.max, \
         memory.high, memory.swap.max, io.max, io.weight and pids.max"
    )]
    UnknownKey(String),
    #[error("invalid value '{value}' for cgroup {key}: {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("cgroup {0} is given twice (only io.max may repeat, once per device)")]
    Duplicate(String),
    #[error("cgroup v2 is not mounted on this host (no cgroup2 entry in /proc/self/mountinfo)")]
    NotMounted,
    #[error(
        "the {controller} controller is not available in the cgroup v2 hierarchy at {mount} \
         (its cgroup.controllers lacks it: bound to cgroup v1 on this host?)"
    )]
    ControllerUnavailable { controller: String, mount: PathBuf },
    #[error(
        "invalid cgroup id '{0}': 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
    )]
    BadId(String),
    #[error("cgroup {0} already exists (another VM with the same jail name?)")]
    Exists(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One validated limit: the interface file and what is written to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
}

impl Setting {
    /// The controller the key belongs to (`memory` for `memory.max`).
    pub fn controller(&self) -> &str {
        self.key.split('.').next().unwrap_or(&self.key)
    }
}

/// Parse and validate one `KEY=VALUE` setting; the value is normalised (sizes in bytes).
pub fn parse_setting(text: &str) -> Result<Setting, CgroupError> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(CgroupError::Syntax(text.into()));
    };
    let (key, value) = (key.trim(), value.trim());
    let bad = |expected| CgroupError::BadValue {
        key: key.into(),
        value: value.into(),
        expected,
    };
    let value = match key {
        "cpu.max" => cpu_max(value).ok_or_else(|| {
            bad("'max' or QUOTA_US [PERIOD_US], quota >= 1000, period 1000..=1000000")
        })?,
        "cpu.weight" | "io.weight" => {
            ranged(value, 1, 10_000).ok_or_else(|| bad("a number from 1 to 10000"))?
        }
        "memory.max" | "memory.high" | "memory.swap.max" => max_or(value, bytes)
            .ok_or_else(|| bad("'max' or a size such as 512M, 2G or 1048576"))?,
        "pids.max" => max_or(value, |v| ranged(v, 1, u64::from(u32::MAX)))
            .ok_or_else(|| bad("'max' or a number of at least 1"))?,
        "io.max" => io_max(value).ok_or_else(|| {
            bad("MAJ:MIN then rbps=, wbps=, riops= or wiops= with a number or max")
        })?,
        _ => return Err(CgroupError::UnknownKey(key.into())),
    };
    Ok(Setting {
        key: key.into(),
        value,
    })
}

/// Reject repeated keys (io.max excepted: one line per device).
pub fn check_unique(settings: &[Setting]) -> Result<(), CgroupError> {
    for (i, s) in settings.iter().enumerate() {
        if s.key != "io.max" && settings[..i].iter().any(|o| o.key == s.key) {
            return Err(CgroupError::Duplicate(s.key.clone()));
        }
    }
    Ok(())
}

fn ranged(v: &str, min: u64, max: u64) -> Option<String> {
    let n: u64 = digits(v)?;
    (min..=max).contains(&n).then(|| n.to_string())
}

fn digits(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn max_or(v: &str, f: impl Fn(&str) -> Option<String>) -> Option<String> {
    if v == "max" {
        Some("max".into())
    } else {
        f(v)
    }
}

fn bytes(v: &str) -> Option<String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let n = digits(&v[..split])?;
    let mult: u64 = match v[split..].to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult).map(|b| b.to_string())
}

fn cpu_max(v: &str) -> Option<String> {
    let mut words = v.split_whitespace();
    let quota = words.next()?;
    let quota = max_or(quota, |q| ranged(q, 1000, u64::from(u32::MAX)))?;
    let period = match words.next() {
        Some(p) => Some(ranged(p, 1000, 1_000_000)?),
        None => None,
    };
    if words.next().is_some() {
        return None;
    }
    Some(match period {
        Some(p) => format!("{quota} {p}"),
        None => quota,
    })
}

fn io_max(v: &str) -> Option<String> {
    let mut words = v.split_whitespace();
    let dev = words.next()?;
    let (major, minor) = dev.split_once(':')?;
    let mut out = format!("{}:{}", digits(major)?, digits(minor)?);
    let mut any = false;
    for w in words {
        let (k, n) = w.split_once('=')?;
        if !matches!(k, "rbps" | "wbps" | "riops" | "wiops") {
            return None;
        }
        let n = max_or(n, |n| ranged(n, 1, u64::MAX))?;
        out.push_str(&format!(" {k}={n}"));
        any = true;
    }
    any.then_some(out)
}

/// Check a jail's cgroup name: it becomes a directory name under [`PARENT`].
pub fn check_id(id: &str) -> Result<(), CgroupError> {
    let ok = (1..=64).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::BadId(id.into()))
    }
}

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` when it is cgroup2, else the first cgroup2
/// mount point in `mountinfo` (hybrid hosts mount it at /sys/fs/cgroup/unified).
pub fn find_mount(mountinfo: &str) -> Result<PathBuf, CgroupError> {
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2") {
            if let Some(point) = left.split_whitespace().nth(4) {
                found.push(PathBuf::from(point));
            }
        }
    }
    let preferred = Path::new("/sys/fs/cgroup");
    if found.iter().any(|p| p == preferred) {
        return Ok(preferred.to_path_buf());
    }
    found.into_iter().next().ok_or(CgroupError::NotMounted)
}

/// A created cgroup with limits written; [`Cgroup::remove`] deletes it once it is empty.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Create `<mount>/vessel/<id>`, enabling the settings' controllers on the way, and
    /// write every setting.
    pub fn create(mount: &Path, id: &str, settings: &[Setting]) -> Result<Self, CgroupError> {
        check_id(id)?;
        check_unique(settings)?;
        let controllers_file = mount.join("cgroup.controllers");
        let available = std::fs::read_to_string(&controllers_file)
            .map_err(io("cannot read", &controllers_file))?;
        let mut needed: Vec<&str> = settings.iter().map(Setting::controller).collect();
        needed.sort_unstable();
        needed.dedup();
        for c in &needed {
            if !available.split_whitespace().any(|a| a == *c) {
                return Err(CgroupError::ControllerUnavailable {
                    controller: (*c).into(),
                    mount: mount.to_path_buf(),
                });
            }
        }
        let parent = mount.join(PARENT);
        match std::fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("cannot create", &parent)(e)),
        }
        for dir in [mount, parent.as_path()] {
            enable_controllers(dir, &needed)?;
        }
        let path = parent.join(id);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(CgroupError::Exists(path))
            }
            Err(e) => return Err(io("cannot create", &path)(e)),
        }
        let cgroup = Cgroup { path };
        if let Err(e) = write_settings(&cgroup.path, settings) {
            let _ = cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Move process `pid` (and its future children) into the cgroup.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        write_file(&self.path.join("cgroup.procs"), &pid.to_string())
    }

    /// Remove the cgroup; its processes must have exited (retried briefly while the
    /// kernel finishes tearing the last one down).
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut tries = 0;
        loop {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(io("cannot remove", &self.path)(e)),
            }
        }
    }
}

/// Write each setting to its interface file in the cgroup directory `path`.
fn write_settings(path: &Path, settings: &[Setting]) -> Result<(), CgroupError> {
    settings
        .iter()
        .try_for_each(|s| write_file(&path.join(&s.key), &s.value))
}

fn enable_controllers(dir: &Path, needed: &[&str]) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&file).map_err(io("cannot read", &file))?;
    for c in needed {
        if !enabled.split_whitespace().any(|e| e == *c) {
            write_file(&file, &format!("+{c}"))?;
        }
    }
    Ok(())
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io("cannot open", path))?;
    f.write_all(value.as_bytes())
        .map_err(io("cannot write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> String {
        parse_setting(s).unwrap().value
    }

    #[test]
    fn values_are_validated_and_normalised() {
        assert_eq!(value("memory.max=512M"), "536870912");
        assert_eq!(value("memory.high=max"), "max");
        assert_eq!(value("cpu.max=50000 100000"), "50000 100000");
        assert_eq!(value("cpu.max=max"), "max");
        assert_eq!(value("cpu.weight=100"), "100");
        assert_eq!(value("pids.max=64"), "64");
        assert_eq!(
            value("io.max=8:0 rbps=1048576 wiops=max"),
            "8:0 rbps=1048576 wiops=max"
        );
        for bad in [
            "memory.max=lots",
            "memory.max=-1",
            "memory.max=1X",
            "memory.max=",
            "cpu.max=10",
            "cpu.max=50000 10",
            "cpu.max=50000 100000 1",
            "cpu.weight=0",
            "cpu.weight=10001",
            "io.max=8:0",
            "io.max=sda rbps=1",
            "io.max=8:0 speed=1",
            "pids.max=0",
        ] {
            assert!(
                matches!(parse_setting(bad), Err(CgroupError::BadValue { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_setting("cpuset.cpus=0"),
            Err(CgroupError::UnknownKey(_))
        ));
        assert!(matches!(
            parse_setting("memory.max"),
            Err(CgroupError::Syntax(_))
        ));
    }

    #[test]
    fn only_io_max_may_repeat() {
        let s = |t| parse_setting(t).unwrap();
        assert!(check_unique(&[s("io.max=8:0 rbps=1"), s("io.max=8:16 rbps=1")]).is_ok());
        assert!(matches!(
            check_unique(&[s("memory.max=1G"), s("memory.max=2G")]),
            Err(CgroupError::Duplicate(_))
        ));
    }

    #[test]
    fn ids_are_plain_names() {
        assert!(check_id("vm-1.a_b").is_ok());
        for bad in ["", ".hidden", "a/b", "..", &"x".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_cgroup2_mount_is_found() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_mount(hybrid).unwrap(),
            Path::new("/sys/fs/cgroup/unified")
        );
        let unified = "41 31 0:38 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(find_mount(unified).unwrap(), Path::new("/sys/fs/cgroup"));
        assert!(matches!(
            find_mount("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"),
            Err(CgroupError::NotMounted)
        ));
    }

    #[test]
    fn settings_go_to_their_interface_files() {
        let t = tempfile::tempdir().unwrap();
        for f in ["memory.max", "cpu.max"] {
            std::fs::write(t.path().join(f), "").unwrap();
        }
        let s = [
            parse_setting("memory.max=2G").unwrap(),
            parse_setting("cpu.max=25000 100000").unwrap(),
        ];
        write_settings(t.path(), &s).unwrap();
        let read = |f| std::fs::read_to_string(t.path().join(f)).unwrap();
        assert_eq!(read("memory.max"), "2147483648");
        assert_eq!(read("cpu.max"), "25000 100000");
    }

    /// A fake hierarchy (a plain directory) stands in for cgroupfs: the files vessel writes.
    #[test]
    fn create_enables_controllers_and_writes_limits() {
        let root = tempfile::tempdir().unwrap();
        let m = root.path();
        std::fs::write(m.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        std::fs::write(m.join("cgroup.subtree_control"), "cpu\n").unwrap();
        std::fs::create_dir(m.join(PARENT)).unwrap();
        std::fs::write(m.join(PARENT).join("cgroup.subtree_control"), "").unwrap();
        // cgroupfs makes interface files itself; the fake needs them before the writes.
        let cg = m.join(PARENT).join("vm1");
        let settings = [parse_setting("memory.max=1M").unwrap()];
        let err = Cgroup::create(m, "vm1", &settings).unwrap_err();
        // The fake has no memory.max file: the failed write is reported and the cgroup removed.
        assert!(matches!(err, CgroupError::Io { .. }), "{err}");
        assert!(!cg.exists());
        assert_eq!(
            std::fs::read_to_string(m.join("cgroup.subtree_control")).unwrap(),
            "+memory"
        );
        let missing = [parse_setting("memory.max=1M").unwrap()];
        std::fs::write(m.join("cgroup.controllers"), "cpu\n").unwrap();
        assert!(matches!(
            Cgroup::create(m, "vm1", &missing),
            Err(CgroupError::ControllerUnavailable { .. })
        ));
    }
}
