//! Where vessel keeps its VMs: `$XDG_STATE_HOME/vessel` (or `--state-dir`), one directory
//! per VM holding its definition, the disks vessel created, the serial log, the console
//! socket, the VMM's pid and lock, and how it last ended.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::vmdef::{valid_name, VmDefinition};

pub const DEFINITION: &str = "vm.toml";
pub const SERIAL_LOG: &str = "serial.log";
pub const CONSOLE_SOCKET: &str = "console.sock";
/// REST API (Firecracker's shape) of the running VM.
pub const API_SOCKET: &str = "api.sock";
pub const PID_FILE: &str = "vmm.pid";
pub const LOCK_FILE: &str = "lock";
pub const VMM_LOG: &str = "vmm.log";
/// Written by the VMM when it ends normally: how the VM ended.
pub const EXIT_FILE: &str = "exit";

/// The state directory.
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    pub fn new(explicit: Option<PathBuf>) -> Result<Self> {
        let root = match explicit {
            Some(p) => p,
            None => match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
                Some(x) => PathBuf::from(x).join("vessel"),
                None => {
                    let home = std::env::var_os("HOME")
                        .context("neither XDG_STATE_HOME nor HOME is set")?;
                    PathBuf::from(home).join(".local/state/vessel")
                }
            },
        };
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        Ok(Self { root })
    }

    /// A state directory that must exist already (never made).
    pub fn open_existing(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            anyhow::bail!("{} is not a directory", root.display());
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn vm(&self, name: &str) -> Result<VmDir> {
        if !valid_name(name) {
            return Err(crate::exit::usage(format!("invalid VM name '{name}': use letters, digits, '-', '_' or '.', starting with a letter or digit")));
        }
        Ok(VmDir {
            name: name.to_string(),
            dir: self.root.join(name),
        })
    }

    /// VMs with a disk whose backing chain reaches into the image store's `image` directory.
    pub fn vms_using_image(&self, image_dir: &Path) -> Result<Vec<String>> {
        let image_dir = std::fs::canonicalize(image_dir).unwrap_or(image_dir.to_path_buf());
        let mut users = Vec::new();
        for name in self.list()? {
            let def = self.vm(&name)?.definition()?;
            let uses = def.disks.iter().any(|d| {
                let opts = block::OpenOptions {
                    read_only: true,
                    format: None,
                    allow_external_backing: d.allow_external_backing,
                };
                let Ok(disk) = block::open(d.path.get_ref(), &opts) else {
                    return false;
                };
                let mut layer = disk.backing();
                while let Some(b) = layer {
                    let p = std::fs::canonicalize(b.path()).unwrap_or(b.path().to_path_buf());
                    if p.starts_with(&image_dir) {
                        return true;
                    }
                    layer = b.backing();
                }
                false
            });
            if uses {
                users.push(name);
            }
        }
        Ok(users)
    }

    /// Names of all VMs, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if valid_name(&name) && entry.path().join(DEFINITION).is_file() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// What a VM is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmState {
    Running {
        pid: i32,
    },
    /// Its VMM waits for a live migration of the VM (`vessel start NAME --incoming URL`).
    Incoming {
        pid: i32,
    },
    Stopped,
    /// Stopped with its whole state saved (`vessel suspend`); `resume` or `start` goes on.
    Suspended,
    /// The VMM died without recording how the VM ended.
    Crashed,
}

impl VmState {
    pub fn label(&self) -> &'static str {
        match self {
            VmState::Running { .. } => "running",
            VmState::Incoming { .. } => "incoming",
            VmState::Stopped => "stopped",
            VmState::Suspended => "suspended",
            VmState::Crashed => "crashed",
        }
    }

    /// The VMM process, while there is one (running, or waiting for a migration).
    pub fn vmm_pid(&self) -> Option<i32> {
        match self {
            VmState::Running { pid } | VmState::Incoming { pid } => Some(*pid),
            _ => None,
        }
    }
}

pub struct VmDir {
    pub name: String,
    pub dir: PathBuf,
}

/// An exclusive lock on a VM directory, held by its VMM for as long as it runs.
pub struct VmLock {
    _file: File,
}

impl VmDir {
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn exists(&self) -> bool {
        self.path(DEFINITION).is_file()
    }

    pub fn definition(&self) -> Result<VmDefinition> {
        if !self.exists() {
            return Err(crate::exit::usage(format!("no VM named '{}'", self.name)));
        }
        VmDefinition::load(&self.path(DEFINITION))
    }

    /// Take the VM's lock without waiting; `None` when a running VMM holds it.
    pub fn try_lock(&self) -> Result<Option<VmLock>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path(LOCK_FILE))
            .with_context(|| format!("cannot open the lock of VM '{}'", self.name))?;
        // SAFETY: flock on a valid, open file descriptor.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            Ok(Some(VmLock { _file: file }))
        } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(std::io::Error::last_os_error()).context("flock")
        }
    }

    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.path(PID_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn state(&self) -> Result<VmState> {
        match self.try_lock()? {
            None if self.path(crate::incoming_cli::INCOMING_FILE).exists() => {
                Ok(VmState::Incoming {
                    pid: self.pid().unwrap_or(0),
                })
            }
            None => Ok(VmState::Running {
                pid: self.pid().unwrap_or(0),
            }),
            Some(_lock) => {
                if crate::suspend_cli::saved_state(self).is_some() {
                    Ok(VmState::Suspended)
                } else if self.path(PID_FILE).exists() && !self.path(EXIT_FILE).exists() {
                    Ok(VmState::Crashed)
                } else {
                    Ok(VmState::Stopped)
                }
            }
        }
    }

    /// Seconds since the VMM started, from the pid file's age.
    pub fn uptime(&self) -> Option<u64> {
        let modified = std::fs::metadata(self.path(PID_FILE))
            .ok()?
            .modified()
            .ok()?;
        Some(modified.elapsed().ok()?.as_secs())
    }

    /// The last `n` lines of the serial log.
    pub fn last_serial_lines(&self, n: usize) -> Vec<String> {
        let Ok(mut f) = File::open(self.path(SERIAL_LOG)) else {
            return vec![];
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let lines: Vec<String> = BufReader::new(f)
            .split(b'\n')
            .map_while(Result::ok)
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    pub fn exit_note(&self) -> Option<String> {
        std::fs::read_to_string(self.path(EXIT_FILE))
            .ok()
            .map(|s| s.trim().to_string())
    }
}

/// Wait until `pid` is gone, up to `timeout`.
pub fn wait_for_exit(dir: &VmDir, timeout: std::time::Duration) -> Result<bool> {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if dir.try_lock()?.is_some() {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(false)
}

pub fn ensure_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))
}
