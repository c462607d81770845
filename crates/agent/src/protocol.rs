//! The framed protocol between `containerd-shim-vessel-v2` on the host and `vessel-agent` in
//! the guest, over one vsock stream (the agent connects to the host's CID 2, [`AGENT_PORT`]).
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of JSON: one
//! [`HostMessage`] (host → guest) or one [`AgentMessage`] (guest → host). Both ends treat
//! the other as hostile: a frame is at most [`MAX_FRAME`] bytes, unknown fields and message
//! types are refused, and every value is checked before use ([`ProcessSpec::validate`],
//! [`HostMessage::Signal`]'s number).

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The vsock port the agent connects to on the host (`<uds>_1024` on vessel's vsock).
pub const AGENT_PORT: u32 = 1024;
/// The largest frame either side accepts, in bytes of JSON.
pub const MAX_FRAME: usize = 1 << 20;
/// The most output bytes one [`AgentMessage::Stdout`]/[`AgentMessage::Stderr`] carries.
pub const MAX_CHUNK: usize = 32 * 1024;
/// The most arguments, environment entries or supplementary groups a process may have.
pub const MAX_LIST: usize = 4096;
/// The longest exec id (containerd's own limit is 76 bytes).
pub const MAX_EXEC_ID: usize = 128;

/// Errors reading or writing frames, and values that fail validation.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("vsock stream: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {0} bytes (the limit is {MAX_FRAME})")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid container spec: {0}")]
    InvalidProcess(String),
}

/// The process the agent runs in the container's root, from the OCI spec's `process`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// `RLIMIT_*` names with their soft and hard limits.
    pub rlimits: Vec<Rlimit>,
    /// Set `no_new_privs` before `execve`.
    pub no_new_privileges: bool,
    /// Run on a terminal the agent opens in the guest (its stdin, stdout and stderr; the
    /// output arrives as `Stdout` only).
    #[serde(default)]
    pub terminal: bool,
    /// The process's `oom_score_adj` in the guest (-1000..=1000).
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
}

/// One resource limit of the OCI spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    pub resource: String,
    pub soft: u64,
    pub hard: u64,
}

/// One file system the agent mounts in the container's root (OCI `mounts`: kernel file
/// systems; `pod-shm`, the pod's one shared-memory tmpfs that the CRI's bind of the
/// sandbox's shm directory becomes in the VM; and [`VOLUME`], a bind of a host directory
/// that reaches the VM through its virtio-fs share).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    pub destination: String,
    pub fstype: String,
    pub options: Vec<String>,
    /// For a [`VOLUME`] only: where the host directory is in the share, `<container>/<n>`.
    #[serde(default)]
    pub source: Option<String>,
}

/// The [`MountSpec`] type of a host directory bound into the container: the guest
/// bind-mounts [`VOLUMES_DIR`]`/<source>`.
pub const VOLUME: &str = "vessel-volume";
/// The virtio-fs tag of the VM's share of host directories.
pub const VOLUMES_TAG: &str = "vessel-volumes";
/// Where the guest mounts that share.
pub const VOLUMES_DIR: &str = "/run/vessel-volumes";

/// Whether `source` names a volume in the share as the host lays them out: two components,
/// a container id (never `.` or `..`) and a number.
pub fn valid_volume_source(source: &str) -> bool {
    match source.split_once('/') {
        Some((id, n)) => {
            valid_id(id)
                && id != "."
                && id != ".."
                && (1..=4).contains(&n.len())
                && n.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Where pod container `id`'s root is in the share ([`VOLUMES_DIR`]): the host mounts
/// containerd's snapshot of it there (writes reach the snapshot, as runc's do).
pub fn pod_root_source(id: &str) -> String {
    format!("{id}/root")
}

/// A host file copied into the container's root at its start (the CRI's binds of the
/// pod's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`): later changes on either
/// side are not seen by the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub destination: String,
    pub data: Vec<u8>,
    /// Bind-mounted read-only over itself.
    pub readonly: bool,
}

/// The largest [`FileSpec`] (its bytes travel in the `Run` frame, as JSON numbers).
pub const MAX_FILE: usize = 64 * 1024;
/// The most [`FileSpec`]s a container may have.
pub const MAX_FILES: usize = 8;

/// Resource limits the guest's kernel enforces on a container: its process and its exec'd
/// processes run in a cgroup v2 group of their own (OCI `linux.resources`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `memory.max`, bytes.
    pub memory_max: Option<u64>,
    /// `memory.low`, bytes (the OCI reservation).
    pub memory_low: Option<u64>,
    /// `cpu.max`: quota and period, microseconds.
    pub cpu_max: Option<(u64, u64)>,
}

impl Limits {
    /// Checks what the kernel takes: at least 1 MiB of memory; a period of 1 ms to 1 s and
    /// a quota of at least 1 ms.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let bad = |what: String| Err(ProtocolError::InvalidProcess(what));
        let small = |v: Option<u64>| v.is_some_and(|v| v < 1 << 20);
        if small(self.memory_max) || small(self.memory_low) {
            return bad(format!("memory limits {self:?} under 1 MiB"));
        }
        match self.cpu_max {
            Some((quota, period)) if quota < 1000 || !(1000..=1_000_000).contains(&period) => {
                bad(format!("cpu quota {quota} µs per period {period} µs"))
            }
            _ => Ok(()),
        }
    }
}

/// A container's use of the guest's CPU, memory and pids, from its cgroup v2 group (the
/// answer to [`HostMessage::Stats`]). Values the kernel does not report are 0; a limit the
/// group does not have ("max") is `u64::MAX`, as containerd reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupStats {
    /// `cpu.stat`.
    pub cpu_usage_usec: u64,
    pub cpu_user_usec: u64,
    pub cpu_system_usec: u64,
    pub cpu_nr_periods: u64,
    pub cpu_nr_throttled: u64,
    pub cpu_throttled_usec: u64,
    /// `memory.current` and `memory.max`, bytes.
    pub memory_usage: u64,
    pub memory_limit: u64,
    /// `memory.stat`, bytes (`pgfault` and `pgmajfault` are counts).
    pub anon: u64,
    pub file: u64,
    pub kernel_stack: u64,
    pub slab: u64,
    pub sock: u64,
    pub shmem: u64,
    pub file_mapped: u64,
    pub file_dirty: u64,
    pub inactive_anon: u64,
    pub active_anon: u64,
    pub inactive_file: u64,
    pub active_file: u64,
    pub unevictable: u64,
    pub pgfault: u64,
    pub pgmajfault: u64,
    /// `pids.current` and `pids.max`.
    pub pids_current: u64,
    pub pids_limit: u64,
}

/// Everything the agent needs to run the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub process: ProcessSpec,
    pub hostname: Option<String>,
    pub mounts: Vec<MountSpec>,
    /// Paths made inaccessible (OCI `linux.maskedPaths`).
    pub masked_paths: Vec<String>,
    /// Paths made read-only (OCI `linux.readonlyPaths`).
    pub readonly_paths: Vec<String>,
    /// The root is read-only once prepared (OCI `root.readonly`).
    #[serde(default)]
    pub readonly_root: bool,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// The file systems a [`MountSpec`] may name.
pub const MOUNT_TYPES: [&str; 9] = [
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", POD_SHM, VOLUME,
];
/// The [`MountSpec`] type of the pod's shared memory.
pub const POD_SHM: &str = "pod-shm";

impl ContainerSpec {
    /// Validates the process, and that every path is absolute, free of `..` and NUL, and
    /// every mount's type one of [`MOUNT_TYPES`].
    pub fn validate(&self) -> Result<(), ProtocolError> {
        self.process.validate()?;
        if let Some(limits) = &self.limits {
            limits.validate()?;
        }
        let bad = |what: String| Err(ProtocolError::InvalidProcess(what));
        let paths = self.mounts.iter().map(|m| &m.destination);
        let files = self.files.iter().map(|f| &f.destination);
        let paths = paths.chain(&self.masked_paths).chain(&self.readonly_paths);
        let paths = paths.chain(files);
        for p in paths {
            if !p.starts_with('/') || p.contains('\0') || p.split('/').any(|c| c == "..") {
                return bad(format!("path {p:?} is not absolute and plain"));
            }
        }
        if let Some(m) = self
            .mounts
            .iter()
            .find(|m| !MOUNT_TYPES.contains(&m.fstype.as_str()))
        {
            return bad(format!("mount type {:?} at {}", m.fstype, m.destination));
        }
        if let Some(m) = self.mounts.iter().find(|m| {
            let volume = m.fstype == VOLUME;
            m.source.is_some() != volume
                || m.source.as_deref().is_some_and(|s| !valid_volume_source(s))
        }) {
            return bad(format!(
                "mount of type {:?} at {} with source {:?}",
                m.fstype, m.destination, m.source
            ));
        }
        let options = self.mounts.iter().flat_map(|m| &m.options);
        let resources = self.process.rlimits.iter().map(|r| &r.resource);
        if options.chain(resources).any(|o| o.contains('\0')) {
            return bad("a NUL byte in a mount option or rlimit".into());
        }
        let lists = [
            self.mounts.len(),
            self.masked_paths.len(),
            self.readonly_paths.len(),
            self.process.rlimits.len(),
        ];
        if lists.iter().any(|&n| n > MAX_LIST) {
            return bad(format!("more than {MAX_LIST} mounts, paths or rlimits"));
        }
        if self.files.len() > MAX_FILES || self.files.iter().any(|f| f.data.len() > MAX_FILE) {
            return bad(format!(
                "more than {MAX_FILES} files or one over {MAX_FILE} bytes"
            ));
        }
        if let Some(f) = self
            .files
            .iter()
            .find(|f| f.destination.trim_matches('/').is_empty())
        {
            return bad(format!("a file at {:?}", f.destination));
        }
        match &self.hostname {
            Some(h) if h.len() > 64 || h.contains('\0') => bad(format!("hostname {h:?}")),
            _ => Ok(()),
        }
    }
}

impl ProcessSpec {
    /// Checks what `execve` and `chdir` need: at least one argument, no NUL bytes, an
    /// absolute cwd, `KEY=VALUE` environment entries, bounded list lengths.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let bad = |what: String| Err(ProtocolError::InvalidProcess(what));
        if self.args.is_empty() || self.args[0].is_empty() {
            return bad("no program to run (args is empty)".into());
        }
        if self.args.len() > MAX_LIST
            || self.env.len() > MAX_LIST
            || self.additional_gids.len() > MAX_LIST
        {
            return bad(format!("more than {MAX_LIST} args, env entries or groups"));
        }
        let strings = self.args.iter().chain(&self.env).chain([&self.cwd]);
        if strings.clone().any(|s| s.contains('\0')) {
            return bad("a NUL byte in args, env or cwd".into());
        }
        if !self.cwd.starts_with('/') {
            return bad(format!("cwd {:?} is not absolute", self.cwd));
        }
        if let Some(adj) = self.oom_score_adj.filter(|a| !(-1000..=1000).contains(a)) {
            return bad(format!("oom_score_adj {adj} is outside -1000..=1000"));
        }
        if let Some(e) = self
            .env
            .iter()
            .find(|e| !e.contains('=') || e.starts_with('='))
        {
            return bad(format!("environment entry {e:?} is not KEY=VALUE"));
        }
        Ok(())
    }
}

/// Host → guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostMessage {
    /// Run the container (once per VM; in a pod, the pod's sandbox).
    Run { container: Box<ContainerSpec> },
    /// Run one more container of the pod in this VM (main connection only). The agent opens
    /// a new connection for it and says [`AgentMessage::Attach`] with this id; its root is
    /// containerd's snapshot, which the host bound into the VM's share before
    /// ([`pod_root_source`]). The connection carries the container's life as the first one
    /// carries the sandbox's (`Started` or `Error`, output, `Exited`; signals, stdin and its
    /// own `Exec`s the other way).
    Container {
        id: String,
        container: Box<ContainerSpec>,
    },
    /// Run one more process in the running container's root (containerd's Exec). The agent
    /// opens a new connection for it, says [`AgentMessage::Attach`] with this id first, and
    /// that connection then carries the process's life as the first one carries the
    /// container's: `Started` (or `Error`), output, `Exited`; signals and stdin the other way.
    Exec {
        id: String,
        process: Box<ProcessSpec>,
    },
    /// Deliver a signal (1..=64) to the container's process.
    Signal { signal: i32 },
    /// Bytes for the process's stdin.
    Stdin { data: Vec<u8> },
    /// Close the process's stdin (ignored on a terminal: a terminal's input ends with its
    /// process).
    CloseStdin,
    /// The size of the process's terminal (ignored without one).
    Resize { rows: u16, cols: u16 },
    /// Report the container's resource use ([`AgentMessage::Stats`] on the same
    /// connection; ignored on an exec's).
    Stats,
    /// Set the limits given here on the running container (containerd's Update); limits
    /// left out stay as they are. Answered with [`AgentMessage::Done`].
    Update { limits: Limits },
    /// Freeze (containerd's Pause) or thaw (Resume) the container's processes, its exec'd
    /// ones too (the cgroup v2 freezer). Answered with [`AgentMessage::Done`] once the
    /// kernel reports the group frozen or thawed.
    Freeze { frozen: bool },
    /// The host has what it needs: power the VM off.
    Shutdown,
}

/// Guest → host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentMessage {
    /// The agent is up and waits for [`HostMessage::Run`].
    Ready {
        kernel: String,
    },
    /// The process runs, with this pid in the guest.
    Started {
        pid: u32,
    },
    Stdout {
        data: Vec<u8>,
    },
    Stderr {
        data: Vec<u8>,
    },
    /// The process ended: its exit code, or 128 + the signal that ended it.
    Exited {
        status: u32,
    },
    /// The agent could not do what was asked.
    Error {
        message: String,
    },
    /// The container's resource use, asked for with [`HostMessage::Stats`].
    Stats {
        stats: Box<CgroupStats>,
    },
    /// The answer to [`HostMessage::Update`] and [`HostMessage::Freeze`]: done, or why not.
    Done {
        error: Option<String>,
    },
    /// The first frame on a connection of its own: the id of the [`HostMessage::Exec`] or
    /// the [`HostMessage::Container`] it serves.
    Attach {
        id: String,
    },
}

/// Whether `id` may name an exec'd process or a pod's container: 1 to [`MAX_EXEC_ID`]
/// bytes of letters, digits, `-`, `_` and `.` (what containerd's ids are made of).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_EXEC_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The signal numbers a [`HostMessage::Signal`] may carry.
pub fn valid_signal(signal: i32) -> bool {
    (1..=64).contains(&signal)
}

/// Writes one frame.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, message: &T) -> Result<(), ProtocolError> {
    let body = serde_json::to_vec(message)?;
    if body.len() > MAX_FRAME {
        return Err(ProtocolError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| ProtocolError::TooLarge(body.len()))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame: `Ok(None)` when the stream ends cleanly between frames.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>, ProtocolError> {
    let mut len = [0u8; 4];
    match read_full(r, &mut len)? {
        0 => return Ok(None),
        4 => {}
        _ => return Err(ProtocolError::Truncated),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 {
        return Err(ProtocolError::Empty);
    }
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    if read_full(r, &mut body)? != len {
        return Err(ProtocolError::Truncated);
    }
    Ok(Some(serde_json::from_slice(&body)?))
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
