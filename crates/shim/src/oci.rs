//! The bundle's OCI runtime spec (`config.json`): what the VM runs, and a clear refusal of
//! every field vessel's runtime does not carry out yet.
//!
//! Parsing is a whitelist: an unknown field anywhere is an error naming it. Accepted but not
//! applied inside the guest (the VM is the isolation boundary; docs/kubernetes.md):
//! `process.capabilities`, `linux.namespaces` (but a pod sandbox's network namespace,
//! which its VM's NIC joins: [`crate::podnet`]), `linux.cgroupsPath` and
//! `linux.resources.devices`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use agent::protocol::{ContainerSpec, Limits, ProcessSpec, Rlimit};
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
    oom_score_adj: Option<i32>,
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
    source: Option<String>,
    #[serde(default)]
    options: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Linux {
    namespaces: Option<Value>,
    resources: Option<resources::Resources>,
    #[allow(dead_code)]
    cgroups_path: Option<String>,
    #[serde(default)]
    masked_paths: Vec<String>,
    #[serde(default)]
    readonly_paths: Vec<String>,
}

/// What the bundle asks for: the container for the agent and the root's path.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    pub container: ContainerSpec,
    /// The container's root on the host (the bundle's `root.path`).
    pub root: PathBuf,
    pub pod: PodRole,
    /// The host directories the container binds, in the order of their
    /// [`agent::protocol::VOLUME`] mounts' sources (`<id>/<n>`).
    pub volumes: Vec<crate::volumes::Volume>,
    /// The network namespace the spec names (`linux.namespaces`, type `network`, with a
    /// path): a pod's, which the CNI plugins set up.
    pub netns: Option<PathBuf>,
    /// A sandbox's pod's resources (its annotations), which size the pod's VM.
    pub pod_limits: Option<Limits>,
}

/// The CRI's annotation saying whether a container is a pod's sandbox or one of its
/// containers.
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// The CRI's annotation naming the pod's sandbox (on the sandbox too).
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Where a container belongs (Kubernetes' CRI annotates its containers; `ctr` does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRole {
    /// A container of its own, in a VM of its own.
    Alone,
    /// A pod's sandbox: it boots the pod's VM.
    Sandbox,
    /// One of the pod's containers: it runs in the sandbox's VM.
    Member { sandbox: String },
}

fn pod_role(annotations: Option<&HashMap<String, String>>) -> Result<PodRole, SpecError> {
    let get = |key| annotations.and_then(|a| a.get(key)).map(String::as_str);
    match (get(CONTAINER_TYPE), get(SANDBOX_ID)) {
        (None, _) => Ok(PodRole::Alone),
        (Some("sandbox"), _) => Ok(PodRole::Sandbox),
        (Some("container"), Some(sandbox)) if agent::protocol::valid_id(sandbox) => {
            Ok(PodRole::Member {
                sandbox: sandbox.to_string(),
            })
        }
        (Some(kind), sandbox) => Err(unsupported(format!(
            "annotations {CONTAINER_TYPE}={kind:?} with {SANDBOX_ID}={sandbox:?}"
        ))),
    }
}

/// The pod a bundle's container belongs to (its sandbox's id), for grouping a pod's
/// containers in one shim; reads nothing but the annotations, and `None` when there is
/// no such annotation or the file cannot be read (Create reports the errors).
pub fn sandbox_id(bundle: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct Annotated {
        annotations: Option<HashMap<String, String>>,
    }
    let file = std::fs::File::open(bundle.join("config.json")).ok()?;
    if file.metadata().ok()?.len() > MAX_SPEC {
        return None;
    }
    let spec: Annotated = serde_json::from_reader(std::io::BufReader::new(file)).ok()?;
    let id = spec.annotations?.remove(SANDBOX_ID)?;
    agent::protocol::valid_id(&id).then_some(id)
}

/// Reads and checks `bundle/config.json`, the spec of container `id`.
pub fn load(bundle: &Path, id: &str) -> Result<BundleSpec, SpecError> {
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
    let mut bundle_spec = convert(spec, id)?;
    bundle_spec.root = bundle.join(&bundle_spec.root);
    Ok(bundle_spec)
}

/// The path of the `network` namespace in `linux.namespaces` (none: a new one, or the
/// host's; either way the VM gets no NIC).
fn network_namespace(namespaces: Option<&Value>) -> Result<Option<PathBuf>, SpecError> {
    let Some(list) = namespaces else {
        return Ok(None);
    };
    let list = list
        .as_array()
        .ok_or_else(|| unsupported("linux.namespaces is not a list"))?;
    let network = list
        .iter()
        .find(|ns| ns.get("type").and_then(Value::as_str) == Some("network"));
    match network.and_then(|ns| ns.get("path")) {
        None => Ok(None),
        Some(Value::String(p)) if Path::new(p).is_absolute() && !p.contains('\0') => {
            Ok(Some(PathBuf::from(p)))
        }
        Some(other) => Err(unsupported(format!(
            "network namespace path {other} (an absolute path)"
        ))),
    }
}

fn unsupported(what: impl Into<String>) -> SpecError {
    SpecError::Unsupported(what.into())
}

/// The checks no whitelist can make, then the agent's view of the spec.
fn convert(spec: Spec, id: &str) -> Result<BundleSpec, SpecError> {
    if spec
        .hooks
        .as_ref()
        .is_some_and(|h| h.as_object().is_none_or(|o| !o.is_empty()))
    {
        return Err(unsupported(
            "hooks (they would run on the host, outside the VM)",
        ));
    }
    let pod = pod_role(spec.annotations.as_ref())?;
    let pod_limits = match pod {
        PodRole::Sandbox => resources::pod_limits(spec.annotations.as_ref())?,
        _ => None,
    };
    let process = spec
        .process
        .ok_or_else(|| unsupported("no process to run"))?;
    let process = process_spec(process)?;
    let root = spec.root.ok_or_else(|| unsupported("no root"))?;
    let mounts::Converted {
        mounts,
        files,
        volumes,
    } = mounts::convert(spec.mounts, id)?;
    let linux = spec.linux;
    let netns = network_namespace(linux.as_ref().and_then(|l| l.namespaces.as_ref()))?;
    let limits = resources::limits(linux.as_ref().and_then(|l| l.resources.as_ref()))?;
    let (masked_paths, readonly_paths) = linux
        .map(|l| (l.masked_paths, l.readonly_paths))
        .unwrap_or_default();
    let container = ContainerSpec {
        process,
        hostname: spec.hostname.filter(|h| !h.is_empty()),
        mounts,
        masked_paths,
        readonly_paths,
        readonly_root: root.readonly,
        files,
        limits,
    };
    container.validate()?;
    Ok(BundleSpec {
        container,
        root: PathBuf::from(root.path),
        pod,
        volumes,
        netns,
        pod_limits,
    })
}

/// The process of an Exec request (containerd sends its OCI `process` as JSON), checked
/// as the container's own process is.
pub fn exec_process(json: &[u8]) -> Result<ProcessSpec, SpecError> {
    if json.len() as u64 > MAX_SPEC {
        return Err(SpecError::TooLarge(PathBuf::from("the exec's process")));
    }
    let process: Process = serde_json::from_slice(json)
        .map_err(|e| SpecError::Parse(PathBuf::from("the exec's process"), e))?;
    let process = process_spec(process)?;
    process.validate()?;
    Ok(process)
}

/// containerd's type URL for the `linux.resources` of an Update request (JSON).
pub const LINUX_RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// The limits an Update request sets (its OCI `linux.resources`, as JSON), read as at
/// Create: `None` when it sets none (shares alone, as at Create, set no limit); what
/// Create refuses is refused.
pub fn update_limits(json: &[u8]) -> Result<Option<Limits>, SpecError> {
    let what = || PathBuf::from("the update's resources");
    if json.len() as u64 > MAX_SPEC {
        return Err(SpecError::TooLarge(what()));
    }
    let r: resources::Resources =
        serde_json::from_slice(json).map_err(|e| SpecError::Parse(what(), e))?;
    let limits = resources::limits(Some(&r))?;
    limits.as_ref().map(Limits::validate).transpose()?;
    Ok(limits)
}

/// The agent's view of an OCI process (a terminal is one the agent opens in the guest).
/// LSM labels name the host's policies, which do not exist in the guest: the VM is the
/// boundary there (as in other VM runtimes); they are logged, not applied.
fn process_spec(process: Process) -> Result<ProcessSpec, SpecError> {
    let labels = [&process.apparmor_profile, &process.selinux_label];
    if let Some(label) = labels.into_iter().flatten().find(|l| !l.is_empty()) {
        tracing::warn!("LSM label {label:?} is not applied: the process runs in the VM");
    }
    let rlimits = process
        .rlimits
        .into_iter()
        .map(|r| Rlimit {
            resource: r.resource,
            soft: r.soft,
            hard: r.hard,
        })
        .collect();
    Ok(ProcessSpec {
        args: process.args,
        env: process.env,
        cwd: process.cwd,
        uid: process.user.uid,
        gid: process.user.gid,
        additional_gids: process.user.additional_gids,
        rlimits,
        no_new_privileges: process.no_new_privileges,
        terminal: process.terminal,
        oom_score_adj: process.oom_score_adj,
    })
}

mod mounts;
mod resources;

#[cfg(test)]
mod tests;
