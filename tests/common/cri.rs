//! A Kubernetes CRI (v1) client of containerd's CRI plugin for the runtime tests, as the
//! kubelet would call it: pod sandboxes, their containers, and processes run in them.
//! Blocking calls, each with a deadline; a failure names the call and carries the gRPC
//! status containerd answered.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    Container, ContainerConfig, ContainerMetadata, ContainerStats, ContainerStatsRequest,
    ContainerStatus, ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    ImageStatusRequest, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListContainersRequest, ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandbox,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatus, PodSandboxStatusRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, RuntimeCondition,
    StartContainerRequest, StatusRequest, StopContainerRequest, StopPodSandboxRequest,
    UpdateContainerResourcesRequest, VersionRequest, VersionResponse,
};
use tonic::transport::{Channel, Endpoint};

/// How long a call may take unless the client is given another deadline.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed CRI call: which, and containerd's gRPC status (none when the deadline passed
/// or the socket refused the connection).
pub struct Error {
    pub call: &'static str,
    pub code: Option<tonic::Code>,
    pub message: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "CRI {}: {code:?}: {}", self.call, self.message),
            None => write!(f, "CRI {}: {}", self.call, self.message),
        }
    }
}

/// The message itself, so that a test's `unwrap` shows what containerd said.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// A pod sandbox: its id and the configuration it was run with (CreateContainer repeats it).
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
}

/// A connection to a CRI server's unix socket.
pub struct Cri {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    timeout: Duration,
}

impl Cri {
    /// Connects to the CRI server listening on `socket` (containerd's gRPC address).
    pub fn connect(socket: &Path) -> Result<Cri> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let path = socket.to_path_buf();
        let endpoint = Endpoint::from_static("http://localhost");
        let connect =
            endpoint.connect_with_connector(tower::service_fn(move |_| unix_stream(path.clone())));
        let channel = runtime
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, connect).await })
            .map_err(|_| timed_out("connect", CALL_TIMEOUT))?
            .map_err(|e| Error {
                call: "connect",
                code: None,
                message: format!("{}: {e:?}", socket.display()),
            })?;
        Ok(Cri {
            runtime,
            channel,
            timeout: CALL_TIMEOUT,
        })
    }

    /// The same connection with `timeout` as every call's deadline (a pod whose sandbox
    /// boots a VM takes longer than [`CALL_TIMEOUT`] where ring 0 is emulated).
    pub fn with_timeout(mut self, timeout: Duration) -> Cri {
        self.timeout = timeout;
        self
    }

    /// The server's runtime name and versions.
    pub fn version(&self) -> Result<VersionResponse> {
        let req = VersionRequest::default();
        self.runtime_call("Version", self.timeout, |mut c| async move {
            c.version(req).await
        })
    }

    /// The runtime's conditions (RuntimeReady, NetworkReady).
    pub fn conditions(&self) -> Result<Vec<RuntimeCondition>> {
        let req = StatusRequest { verbose: false };
        let status = self.runtime_call("Status", self.timeout, |mut c| async move {
            c.status(req).await
        })?;
        Ok(status.status.map(|s| s.conditions).unwrap_or_default())
    }

    /// The id of image `image` in the CRI's image store, if it is there.
    pub fn image_id(&self, image: &str) -> Result<Option<String>> {
        let req = ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        let mut client = ImageServiceClient::new(self.channel.clone());
        let status = self.call("ImageStatus", self.timeout, async move {
            client.image_status(req).await
        })?;
        Ok(status.image.map(|i| i.id))
    }

    /// Runs pod `name` (Kubernetes uid `uid`, namespace `namespace`) with `runtime_handler`
    /// ("" for containerd's default runtime), on the host's network or in its own.
    pub fn run_pod_sandbox(
        &self,
        name: &str,
        uid: &str,
        namespace: &str,
        runtime_handler: &str,
        host_network: bool,
    ) -> Result<Pod> {
        let config = pod_config(name, uid, namespace, host_network);
        let id = self.run_pod_sandbox_with(&config, runtime_handler)?;
        Ok(Pod { id, config })
    }

    /// Runs a pod of configuration `config` with `runtime_handler`; its sandbox's id.
    pub fn run_pod_sandbox_with(
        &self,
        config: &PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: runtime_handler.to_string(),
        };
        let resp = self.runtime_call("RunPodSandbox", self.timeout, |mut c| async move {
            c.run_pod_sandbox(req).await
        })?;
        Ok(resp.pod_sandbox_id)
    }

    /// Creates container `name` of image `image` running `command` in `pod`
    /// ([`container_config`]); its id.
    pub fn create_container(
        &self,
        pod: &Pod,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> Result<String> {
        self.create_container_with(pod, container_config(name, image, command, &pod.config))
    }

    /// Creates a container of configuration `config` in `pod`; its id.
    pub fn create_container_with(&self, pod: &Pod, config: ContainerConfig) -> Result<String> {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let resp = self.runtime_call("CreateContainer", self.timeout, |mut c| async move {
            c.create_container(req).await
        })?;
        Ok(resp.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<()> {
        let req = StartContainerRequest {
            container_id: id.to_string(),
        };
        self.runtime_call("StartContainer", self.timeout, |mut c| async move {
            c.start_container(req).await
        })?;
        Ok(())
    }

    /// Runs `cmd` in container `id`, for at most `timeout` (whole seconds); its exit code,
    /// stdout and stderr.
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>, Vec<u8>)> {
        let req = ExecSyncRequest {
            container_id: id.to_string(),
            cmd: strings(cmd),
            timeout: timeout.as_secs().max(1) as i64,
        };
        let deadline = timeout + self.timeout;
        let resp = self.runtime_call("ExecSync", deadline, |mut c| async move {
            c.exec_sync(req).await
        })?;
        Ok((resp.exit_code, resp.stdout, resp.stderr))
    }

    pub fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let req = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        let resp = self.runtime_call("ContainerStatus", self.timeout, |mut c| async move {
            c.container_status(req).await
        })?;
        resp.status.ok_or_else(|| no_status("ContainerStatus"))
    }

    pub fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        let req = ContainerStatsRequest {
            container_id: id.to_string(),
        };
        let resp = self.runtime_call("ContainerStats", self.timeout, |mut c| async move {
            c.container_stats(req).await
        })?;
        resp.stats.ok_or_else(|| no_status("ContainerStats"))
    }

    /// New resources for running container `id` (the kubelet's update of a pod's limits).
    pub fn update_container_resources(
        &self,
        id: &str,
        linux: LinuxContainerResources,
    ) -> Result<()> {
        let req = UpdateContainerResourcesRequest {
            container_id: id.to_string(),
            linux: Some(linux),
            ..Default::default()
        };
        self.runtime_call(
            "UpdateContainerResources",
            self.timeout,
            |mut c| async move { c.update_container_resources(req).await },
        )?;
        Ok(())
    }

    pub fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        };
        let resp = self.runtime_call("PodSandboxStatus", self.timeout, |mut c| async move {
            c.pod_sandbox_status(req).await
        })?;
        resp.status.ok_or_else(|| no_status("PodSandboxStatus"))
    }

    /// Stops container `id`: its stop signal, then SIGKILL after `grace` (at once when zero).
    pub fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let req = StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace.as_secs() as i64,
        };
        let deadline = grace + self.timeout;
        self.runtime_call("StopContainer", deadline, |mut c| async move {
            c.stop_container(req).await
        })?;
        Ok(())
    }

    pub fn remove_container(&self, id: &str) -> Result<()> {
        let req = RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.runtime_call("RemoveContainer", self.timeout, |mut c| async move {
            c.remove_container(req).await
        })?;
        Ok(())
    }

    /// Stops pod sandbox `id`: its containers and its sandbox process end.
    pub fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.runtime_call("StopPodSandbox", self.timeout, |mut c| async move {
            c.stop_pod_sandbox(req).await
        })?;
        Ok(())
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.runtime_call("RemovePodSandbox", self.timeout, |mut c| async move {
            c.remove_pod_sandbox(req).await
        })?;
        Ok(())
    }

    pub fn list_pod_sandboxes(&self) -> Result<Vec<PodSandbox>> {
        let req = ListPodSandboxRequest { filter: None };
        let resp = self.runtime_call("ListPodSandbox", self.timeout, |mut c| async move {
            c.list_pod_sandbox(req).await
        })?;
        Ok(resp.items)
    }

    pub fn list_containers(&self) -> Result<Vec<Container>> {
        let req = ListContainersRequest { filter: None };
        let resp = self.runtime_call("ListContainers", self.timeout, |mut c| async move {
            c.list_containers(req).await
        })?;
        Ok(resp.containers)
    }

    /// A RuntimeService call `call` made by `f`, within `timeout`.
    fn runtime_call<T, F, Fut>(&self, call: &'static str, timeout: Duration, f: F) -> Result<T>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = RuntimeServiceClient::new(self.channel.clone());
        self.call(call, timeout, f(client))
    }

    /// The answer of the gRPC call `call` (the future `rpc`), within `timeout`.
    fn call<T>(
        &self,
        call: &'static str,
        timeout: Duration,
        rpc: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        let answer = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, rpc).await })
            .map_err(|_| timed_out(call, timeout))?;
        answer
            .map(tonic::Response::into_inner)
            .map_err(|status| Error {
                call,
                code: Some(status.code()),
                message: status.message().to_string(),
            })
    }
}

async fn unix_stream(
    path: PathBuf,
) -> std::io::Result<hyper_util::rt::TokioIo<tokio::net::UnixStream>> {
    Ok(hyper_util::rt::TokioIo::new(
        tokio::net::UnixStream::connect(path).await?,
    ))
}

/// The paths the kubelet masks in a container that is not privileged.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The paths the kubelet makes read-only in a container that is not privileged.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A pod's configuration as the kubelet sends it for a pod without volumes or ports: its
/// own PID namespace per container, and the host's network or a network namespace of the
/// pod's own.
pub fn pod_config(name: &str, uid: &str, namespace: &str, host_network: bool) -> PodSandboxConfig {
    let network = if host_network {
        NamespaceMode::Node
    } else {
        NamespaceMode::Pod
    };
    let namespaces = NamespaceOption {
        network: network as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    };
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.to_string(),
            namespace: namespace.to_string(),
            attempt: 0,
        }),
        hostname: if host_network { "" } else { name }.to_string(),
        labels: HashMap::from([
            ("io.kubernetes.pod.name".into(), name.into()),
            ("io.kubernetes.pod.namespace".into(), namespace.into()),
            ("io.kubernetes.pod.uid".into(), uid.into()),
        ]),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container's configuration in a pod of configuration `pod`, as the kubelet sends it for
/// a container without volumes in a BestEffort pod: `command` (the image's entrypoint when
/// empty) in the pod's namespaces, the kubelet's masked and read-only paths, its CPU shares
/// and OOM score.
pub fn container_config(
    name: &str,
    image: &str,
    command: &[&str],
    pod: &PodSandboxConfig,
) -> ContainerConfig {
    let namespace_options = pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(image_spec(image)),
        command: strings(command),
        labels: HashMap::from([("io.kubernetes.container.name".into(), name.into())]),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_shares: 2,
                oom_score_adj: 1000,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options,
                masked_paths: strings(MASKED_PATHS),
                readonly_paths: strings(READONLY_PATHS),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn timed_out(call: &'static str, after: Duration) -> Error {
    Error {
        call,
        code: None,
        message: format!("no answer within {after:?}"),
    }
}

fn no_status(call: &'static str) -> Error {
    Error {
        call,
        code: None,
        message: "the answer has no status".into(),
    }
}
