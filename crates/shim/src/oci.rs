//! The bundle's OCI runtime spec (`config.json`): what the VM runs, and a clear refusal of
//! every field vessel's runtime does not carry out yet.
//!
//! Parsing is a whitelist: an unknown field anywhere is an error naming it. Accepted but not
//! applied inside the guest (the VM is the isolation boundary; docs/kubernetes.md):
//! `process.capabilities`, `linux.namespaces`, `linux.cgroupsPath` and
//! `linux.resources.devices`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use agent::protocol::{ContainerSpec, MountSpec, ProcessSpec, Rlimit, MOUNT_TYPES};
use serde::Deserialize;
use serde_json::Value;

/// The largest config.json read.
const MAX_SPEC: u64 = 4 << 20;

/// Errors reading the spec, and fields it cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0} is larger than {MAX_SPEC} bytes")]
    TooLarge(PathBuf),
    #[error("{0}: {1} (vessel's runtime does not support this OCI field yet)")]
    Parse(PathBuf, serde_json::Error),
    #[error("unsupported OCI spec: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Invalid(#[from] agent::protocol::ProtocolError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    #[allow(dead_code)]
    oci_version: String,
    process: Option<Process>,
    root: Option<Root>,
    hostname: Option<String>,
    #[serde(default)]
    mounts: Vec<Mount>,
    hooks: Option<Value>,
    #[allow(dead_code)]
    annotations: Option<HashMap<String, String>>,
    linux: Option<Linux>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Process {
    #[serde(default)]
    terminal: bool,
    user: User,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    cwd: String,
    #[allow(dead_code)]
    capabilities: Option<Value>,
    #[serde(default)]
    rlimits: Vec<OciRlimit>,
    #[serde(default)]
    no_new_privileges: bool,
    apparmor_profile: Option<String>,
    selinux_label: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct User {
    uid: u32,
    gid: u32,
    #[serde(default)]
    additional_gids: Vec<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OciRlimit {
    #[serde(rename = "type")]
    resource: String,
    hard: u64,
    soft: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Root {
    path: String,
    #[serde(default)]
    readonly: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mount {
    destination: String,
    #[serde(rename = "type")]
    fstype: Option<String>,
    #[allow(dead_code)]
    source: Option<String>,
    #[serde(default)]
    options: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Linux {
    #[allow(dead_code)]
    namespaces: Option<Value>,
    resources: Option<Resources>,
    #[allow(dead_code)]
    cgroups_path: Option<String>,
    #[serde(default)]
    masked_paths: Vec<String>,
    #[serde(default)]
    readonly_paths: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resources {
    #[allow(dead_code)]
    devices: Option<Value>,
    cpu: Option<Cpu>,
}

/// `linux.resources.cpu`: ctr fills it in; only what sets no limit is accepted (the
/// VM's size is the limit; mapping limits to vCPUs is not done yet).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Cpu {
    #[allow(dead_code)]
    shares: Option<u64>,
    quota: Option<i64>,
    #[allow(dead_code)]
    period: Option<u64>,
    realtime_runtime: Option<i64>,
    realtime_period: Option<u64>,
    cpus: Option<String>,
    mems: Option<String>,
}

impl Cpu {
    fn limits(&self) -> bool {
        self.quota.is_some_and(|q| q > 0)
            || self.realtime_runtime.is_some_and(|r| r != 0)
            || self.realtime_period.is_some_and(|p| p != 0)
            || self.cpus.as_ref().is_some_and(|c| !c.is_empty())
            || self.mems.as_ref().is_some_and(|m| !m.is_empty())
    }
}

/// What the bundle asks for: the container for the agent and the root's path.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    pub container: ContainerSpec,
    /// The container's root on the host (the bundle's `root.path`).
    pub root: PathBuf,
}

/// Reads and checks `bundle/config.json`.
pub fn load(bundle: &Path) -> Result<BundleSpec, SpecError> {
    let path = bundle.join("config.json");
    let file = std::fs::File::open(&path).map_err(|e| SpecError::Read(path.clone(), e))?;
    let size = file
        .metadata()
        .map_err(|e| SpecError::Read(path.clone(), e))?
        .len();
    if size > MAX_SPEC {
        return Err(SpecError::TooLarge(path));
    }
    let spec: Spec = serde_json::from_reader(std::io::BufReader::new(file))
        .map_err(|e| SpecError::Parse(path.clone(), e))?;
    let mut bundle_spec = convert(spec)?;
    bundle_spec.root = bundle.join(&bundle_spec.root);
    Ok(bundle_spec)
}

fn unsupported(what: impl Into<String>) -> SpecError {
    SpecError::Unsupported(what.into())
}

/// The checks no whitelist can make, then the agent's view of the spec.
fn convert(spec: Spec) -> Result<BundleSpec, SpecError> {
    if spec
        .hooks
        .as_ref()
        .is_some_and(|h| h.as_object().is_none_or(|o| !o.is_empty()))
    {
        return Err(unsupported(
            "hooks (they would run on the host, outside the VM)",
        ));
    }
    let process = spec
        .process
        .ok_or_else(|| unsupported("no process to run"))?;
    if process.terminal {
        return Err(unsupported(
            "process.terminal: TTYs are not supported yet (run without -t)",
        ));
    }
    if process.apparmor_profile.is_some_and(|p| !p.is_empty())
        || process.selinux_label.is_some_and(|l| !l.is_empty())
    {
        return Err(unsupported(
            "process.apparmorProfile/selinuxLabel (no LSM in the guest)",
        ));
    }
    let root = spec.root.ok_or_else(|| unsupported("no root"))?;
    if root.readonly {
        return Err(unsupported(
            "root.readonly: a read-only root is not supported yet",
        ));
    }
    let mut mounts = Vec::with_capacity(spec.mounts.len());
    for m in spec.mounts {
        let fstype = m.fstype.unwrap_or_default();
        if !MOUNT_TYPES.contains(&fstype.as_str()) || m.options.iter().any(|o| o.contains("bind")) {
            return Err(unsupported(format!(
                "mount at {}: type {fstype:?} (volumes and bind mounts are not supported yet; \
                 the guest mounts only {})",
                m.destination,
                MOUNT_TYPES.join(", ")
            )));
        }
        mounts.push(MountSpec {
            destination: m.destination,
            fstype,
            options: m.options,
        });
    }
    let linux = spec.linux;
    let cpu = linux
        .as_ref()
        .and_then(|l| l.resources.as_ref())
        .and_then(|r| r.cpu.as_ref());
    if cpu.is_some_and(Cpu::limits) {
        return Err(unsupported(
            "linux.resources.cpu: CPU limits (quota, cpusets, realtime) are not supported yet",
        ));
    }
    let (masked_paths, readonly_paths) = linux
        .map(|l| (l.masked_paths, l.readonly_paths))
        .unwrap_or_default();
    let rlimits = process
        .rlimits
        .into_iter()
        .map(|r| Rlimit {
            resource: r.resource,
            soft: r.soft,
            hard: r.hard,
        })
        .collect();
    let container = ContainerSpec {
        process: ProcessSpec {
            args: process.args,
            env: process.env,
            cwd: process.cwd,
            uid: process.user.uid,
            gid: process.user.gid,
            additional_gids: process.user.additional_gids,
            rlimits,
            no_new_privileges: process.no_new_privileges,
        },
        hostname: spec.hostname.filter(|h| !h.is_empty()),
        mounts,
        masked_paths,
        readonly_paths,
    };
    container.validate()?;
    Ok(BundleSpec {
        container,
        root: PathBuf::from(root.path),
    })
}

#[cfg(test)]
mod tests;
