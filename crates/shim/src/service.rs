//! containerd's side: the shim's life cycle (`start`, `delete`, serving) and the Task
//! service over ttrpc, mapped onto [`Container`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use containerd_shim::api::{self, Status as TaskStatus};
use containerd_shim::protos::events::task::{TaskExit, TaskPaused, TaskResumed};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics::{
    TASK_EXIT_EVENT_TOPIC, TASK_PAUSED_EVENT_TOPIC, TASK_RESUMED_EVENT_TOPIC,
};
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{
    Config, DeleteResponse, ExitSignal, Flags, StartOpts, TtrpcContext, TtrpcResult,
};

use crate::config::ShimConfig;
use crate::container::{Container, ContainerError, Exit, Status, StdioPaths};
use crate::oci::PodRole;

/// The runtime's name in containerd.
pub const RUNTIME_ID: &str = "io.containerd.vessel.v2";

/// One shim process: one container, or one pod (its sandbox and containers, in one VM).
#[derive(Clone)]
pub struct Service {
    exit: Arc<ExitSignal>,
    namespace: String,
    /// The shim's own ttrpc socket (`unix:///run/containerd/s/...`).
    socket: String,
    containers: Arc<Mutex<HashMap<String, Arc<Container>>>>,
    publisher: Option<Arc<RemotePublisher>>,
}

fn rpc_error(code: Code, message: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

fn to_rpc(e: ContainerError) -> ttrpc::Error {
    let code = match &e {
        ContainerError::Spec(_) | ContainerError::Signal(_) | ContainerError::ExecId(_) => {
            Code::INVALID_ARGUMENT
        }
        ContainerError::State(_) => Code::FAILED_PRECONDITION,
        ContainerError::NoExec(_) => Code::NOT_FOUND,
        ContainerError::ExecExists(_) => Code::ALREADY_EXISTS,
        _ => Code::INTERNAL,
    };
    rpc_error(code, e)
}

fn unsupported(what: &str) -> ttrpc::Error {
    rpc_error(
        Code::UNIMPLEMENTED,
        format!("{what} is not supported by vessel's runtime yet"),
    )
}

/// A ResizePty request's width and height as the terminal's (rows, columns); sizes a
/// terminal cannot have are refused.
fn terminal_size(width: u32, height: u32) -> TtrpcResult<(u16, u16)> {
    match (u16::try_from(height), u16::try_from(width)) {
        (Ok(rows), Ok(cols)) => Ok((rows, cols)),
        _ => Err(rpc_error(
            Code::INVALID_ARGUMENT,
            format!("terminal size {width}x{height}"),
        )),
    }
}

/// A task event that names its container.
trait TaskEvent: containerd_shim::event::Event + 'static {
    fn set_container(&mut self, id: String);
}

impl TaskEvent for TaskPaused {
    fn set_container(&mut self, id: String) {
        self.container_id = id;
    }
}

impl TaskEvent for TaskResumed {
    fn set_container(&mut self, id: String) {
        self.container_id = id;
    }
}

fn timestamp(at: SystemTime) -> MessageField<Timestamp> {
    MessageField::some(Timestamp::from(at))
}

impl Service {
    fn containers(&self) -> MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn container(&self, id: &str) -> TtrpcResult<Arc<Container>> {
        let c = self.containers().get(id).cloned();
        c.ok_or_else(|| rpc_error(Code::NOT_FOUND, format!("no container {id} in this shim")))
    }

    /// A new container: in a VM of its own, or in its pod's (its sandbox is in this shim:
    /// [`Service::start_shim`] groups a pod's containers).
    fn create_container(&self, req: &api::CreateTaskRequest) -> TtrpcResult<Arc<Container>> {
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        let bundle = std::path::Path::new(&req.bundle);
        let (id, rootfs) = (req.id.as_str(), req.rootfs.as_slice());
        let spec = crate::oci::load(bundle, id).map_err(|e| to_rpc(e.into()))?;
        if let PodRole::Member { sandbox } = &spec.pod {
            let sandbox = self.container(sandbox).map_err(|_| {
                let message = format!("pod sandbox {sandbox} is not in this shim");
                rpc_error(Code::FAILED_PRECONDITION, message)
            })?;
            return Container::create_in_pod(id, bundle, spec, rootfs, stdio, sandbox)
                .map_err(to_rpc);
        }
        let config = ShimConfig::load().map_err(|e| rpc_error(Code::FAILED_PRECONDITION, e))?;
        Container::create(id, bundle, spec, rootfs, stdio, &config).map_err(to_rpc)
    }

    /// Publishes a task event (`/tasks/paused`, `/tasks/resumed`) naming the container.
    fn publish<E>(&self, container: &Container, topic: &str, new: fn() -> E)
    where
        E: TaskEvent,
    {
        let Some(publisher) = &self.publisher else {
            return;
        };
        let mut event = new();
        event.set_container(container.id.clone());
        let ctx = containerd_shim::Context::default();
        if let Err(e) = publisher.publish(ctx, topic, &self.namespace, Box::new(event)) {
            tracing::warn!("publish {topic} of {}: {e}", container.id);
        }
    }

    /// Publishes `/tasks/exit` for the container's process (`exec_id` empty) or an exec.
    fn publish_exit(&self, container: &Container, exec_id: &str, exit: Exit) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        let id = if exec_id.is_empty() {
            container.id.clone()
        } else {
            exec_id.to_string()
        };
        let event = TaskExit {
            container_id: container.id.clone(),
            id,
            pid: container.pid,
            exit_status: exit.status,
            exited_at: timestamp(exit.at),
            ..Default::default()
        };
        let ctx = containerd_shim::Context::default();
        if let Err(e) =
            publisher.publish(ctx, TASK_EXIT_EVENT_TOPIC, &self.namespace, Box::new(event))
        {
            tracing::warn!("publish the exit of {}: {e}", container.id);
        }
    }
}

impl containerd_shim::Shim for Service {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            socket: args.socket.clone(),
            containers: Arc::default(),
            publisher: None,
        }
    }

    /// Starts the shim of a container, or finds the one of its pod: containers with the
    /// same sandbox id share a shim (its socket is named after the group; a second start
    /// finds it in use and answers its address).
    fn start_shim(&mut self, opts: StartOpts) -> Result<String, containerd_shim::Error> {
        let bundle = std::env::current_dir().unwrap_or_default();
        let grouping = crate::oci::sandbox_id(&bundle).unwrap_or_else(|| opts.id.clone());
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        // As containerd's own shims do: the bundle's `address` names the shim's socket,
        // which `delete` removes after a shim that was killed.
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    /// containerd runs `delete` in the bundle when a shim died: end its VM, remove its
    /// files and the shim's socket.
    fn delete_shim(&mut self) -> Result<DeleteResponse, containerd_shim::Error> {
        let bundle = std::env::current_dir().map_err(|err| containerd_shim::Error::IoError {
            context: "the bundle (the working directory)".into(),
            err,
        })?;
        crate::vm::clean_up_after(&bundle);
        crate::vm::remove_dead_shims_socket(&bundle);
        Ok(DeleteResponse {
            exit_status: 128 + 9,
            exited_at: timestamp(SystemTime::now()),
            ..Default::default()
        })
    }

    /// Waits for Shutdown, then unlinks the shim's socket: containerd-shim removes it only
    /// through the bundle's `address` file, which containerd has deleted by then. The
    /// server keeps its listening descriptor until it stops.
    fn wait(&mut self) {
        self.exit.wait();
        if let Some(path) = self.socket.strip_prefix("unix://") {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!("remove the shim's socket {path}: {e}");
            }
        }
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let mut service = self.clone();
        service.publisher = Some(Arc::new(publisher));
        service
    }
}

impl containerd_shim::Task for Service {
    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.container(&req.id).map(|c| c.pid).unwrap_or_default();
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        if !req.checkpoint.is_empty() {
            return Err(unsupported("restoring a checkpoint"));
        }
        if self.containers().contains_key(&req.id) {
            let message = format!("container {} exists already", req.id);
            return Err(rpc_error(Code::ALREADY_EXISTS, message));
        }
        let container = self.create_container(&req)?;
        let pid = container.pid;
        self.containers().insert(req.id.clone(), container);
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let container = self.container(&req.id)?;
        let me = self.clone();
        let c = container.clone();
        let exec_id = req.exec_id.clone();
        let on_exit = Box::new(move |exit| me.publish_exit(&c, &exec_id, exit));
        if !req.exec_id.is_empty() {
            container
                .start_exec(&req.exec_id, on_exit)
                .map_err(to_rpc)?;
            return Ok(api::StartResponse {
                pid: container.pid,
                ..Default::default()
            });
        }
        let config = ShimConfig::load().map_err(|e| rpc_error(Code::FAILED_PRECONDITION, e))?;
        let boot = Duration::from_secs(config.boot_timeout_secs());
        let pid = container.start(boot, on_exit).map_err(to_rpc)?;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let spec = req.spec.as_ref().map(|any| any.value.as_slice());
        let spec = spec.ok_or_else(|| rpc_error(Code::INVALID_ARGUMENT, "no process spec"))?;
        let process =
            crate::oci::exec_process(spec).map_err(|e| to_rpc(ContainerError::Spec(e)))?;
        let stdio = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        };
        self.container(&req.id)?
            .add_exec(&req.exec_id, stdio, process)
            .map_err(to_rpc)?;
        Ok(api::Empty::default())
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let c = self.container(&req.id)?;
        let (id, stdio, (status, exit)) = if req.exec_id.is_empty() {
            (c.id.clone(), c.stdio.clone(), c.status())
        } else {
            let e = c.exec(&req.exec_id).map_err(to_rpc)?;
            (e.id.clone(), e.stdio.clone(), e.status())
        };
        let status = match status {
            Status::Created => TaskStatus::CREATED,
            Status::Running if req.exec_id.is_empty() && c.paused() => TaskStatus::PAUSED,
            Status::Running => TaskStatus::RUNNING,
            Status::Stopped => TaskStatus::STOPPED,
        };
        Ok(api::StateResponse {
            id,
            bundle: c.bundle.display().to_string(),
            pid: c.pid,
            status: status.into(),
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            exit_status: exit.map(|e| e.status).unwrap_or_default(),
            exited_at: exit.map(|e| timestamp(e.at)).unwrap_or_default(),
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        let killed = if req.exec_id.is_empty() {
            c.kill(req.signal)
        } else {
            c.exec(&req.exec_id).and_then(|e| e.kill(req.signal))
        };
        killed.map_err(to_rpc)?;
        Ok(api::Empty::default())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let c = self.container(&req.id)?;
        let exit = if req.exec_id.is_empty() {
            c.wait()
        } else {
            c.exec(&req.exec_id).map_err(to_rpc)?.wait()
        };
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: timestamp(exit.at),
            ..Default::default()
        })
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let c = self.container(&req.id)?;
        let exit = if req.exec_id.is_empty() {
            c.delete()
        } else {
            c.delete_exec(&req.exec_id)
        };
        let exit = exit.map_err(to_rpc)?;
        if req.exec_id.is_empty() {
            self.containers().remove(&req.id);
        }
        Ok(api::DeleteResponse {
            pid: c.pid,
            exit_status: exit.status,
            exited_at: timestamp(exit.at),
            ..Default::default()
        })
    }

    /// The VMM is the one host process of the task: exec'd processes run inside it too.
    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let c = self.container(&req.id)?;
        let processes = match c.status().0 {
            Status::Stopped => vec![],
            _ => vec![ProcessInfo {
                pid: c.pid,
                ..Default::default()
            }],
        };
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    /// The container's cgroup counters in the guest, as cgroup v2 metrics (the task must be
    /// running: a stopped one has no VM to ask).
    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let c = self.container(&req.id)?;
        let stats = c.stats().map_err(to_rpc)?;
        let any = crate::stats::to_any(&crate::stats::metrics(&stats))
            .map_err(|e| rpc_error(Code::INTERNAL, e))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    /// Freezes the container's processes (its exec'd ones too) in the guest: the cgroup v2
    /// freezer, as runc pauses a container on a cgroup v2 host. The VM itself runs on.
    fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        c.set_paused(true).map_err(to_rpc)?;
        self.publish(&c, TASK_PAUSED_EVENT_TOPIC, TaskPaused::new);
        Ok(api::Empty::default())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        c.set_paused(false).map_err(to_rpc)?;
        self.publish(&c, TASK_RESUMED_EVENT_TOPIC, TaskResumed::new);
        Ok(api::Empty::default())
    }

    /// New limits for the running container (`linux.resources`), set in its guest cgroup;
    /// the VM keeps its size (no memory or vCPU hotplug yet), so a limit above it binds at
    /// the VM's size.
    fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        let resources = req.resources.as_ref();
        let json = match resources {
            Some(any) if any.type_url == crate::oci::LINUX_RESOURCES_TYPE_URL => &any.value,
            other => {
                let url = other.map(|a| a.type_url.as_str()).unwrap_or("none");
                return Err(rpc_error(
                    Code::INVALID_ARGUMENT,
                    format!("resources of type {url:?}: vessel takes Linux resources"),
                ));
            }
        };
        let limits = crate::oci::update_limits(json).map_err(|e| to_rpc(e.into()))?;
        if let Some(limits) = limits {
            c.update(limits).map_err(to_rpc)?;
        }
        Ok(api::Empty::default())
    }

    /// The terminal's size, for the container's process or an exec's (ignored by the agent
    /// for a process without a terminal).
    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let (rows, cols) = terminal_size(req.width, req.height)?;
        let c = self.container(&req.id)?;
        let resize = &agent::protocol::HostMessage::Resize { rows, cols };
        let sent = if req.exec_id.is_empty() {
            c.send(resize)
        } else {
            c.exec(&req.exec_id).and_then(|e| e.send(resize))
        };
        sent.map_err(to_rpc)?;
        Ok(api::Empty::default())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        if req.stdin {
            let c = self.container(&req.id)?;
            if req.exec_id.is_empty() {
                c.close_stdin();
            } else {
                c.exec(&req.exec_id).map_err(to_rpc)?.close_stdin();
            }
        }
        Ok(api::Empty::default())
    }

    /// Ends the shim once it has no container left (containerd deletes each first).
    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        if self.containers().is_empty() {
            self.exit.signal();
        }
        Ok(api::Empty::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sizes_map_to_rows_and_columns_and_impossible_ones_are_refused() {
        assert_eq!(terminal_size(100, 30).unwrap(), (30, 100));
        assert_eq!(terminal_size(0, 0).unwrap(), (0, 0));
        for (w, h) in [(70_000, 30), (100, 65_536), (u32::MAX, u32::MAX)] {
            let err = terminal_size(w, h).unwrap_err();
            assert!(err.to_string().contains("INVALID_ARGUMENT"), "{err}");
        }
    }
}
