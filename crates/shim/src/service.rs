//! containerd's side: the shim's life cycle (`start`, `delete`, serving) and the Task
//! service over ttrpc, mapped onto [`Container`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use containerd_shim::api::{self, Status as TaskStatus};
use containerd_shim::protos::events::task::TaskExit;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics::TASK_EXIT_EVENT_TOPIC;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{
    Config, DeleteResponse, ExitSignal, Flags, StartOpts, TtrpcContext, TtrpcResult,
};

use crate::config::ShimConfig;
use crate::container::{Container, ContainerError, Exit, Status, StdioPaths};

/// The runtime's name in containerd.
pub const RUNTIME_ID: &str = "io.containerd.vessel.v2";

/// One shim process: one container (pods sharing a VM are not done yet).
#[derive(Clone)]
pub struct Service {
    exit: Arc<ExitSignal>,
    namespace: String,
    /// The shim's own ttrpc socket (`unix:///run/containerd/s/...`).
    socket: String,
    container: Arc<Mutex<Option<Arc<Container>>>>,
    publisher: Option<Arc<RemotePublisher>>,
}

fn rpc_error(code: Code, message: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

fn to_rpc(e: ContainerError) -> ttrpc::Error {
    let code = match &e {
        ContainerError::Spec(_) | ContainerError::Signal(_) => Code::INVALID_ARGUMENT,
        ContainerError::State(_) => Code::FAILED_PRECONDITION,
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

fn timestamp(at: SystemTime) -> MessageField<Timestamp> {
    MessageField::some(Timestamp::from(at))
}

impl Service {
    fn container(&self) -> TtrpcResult<Arc<Container>> {
        let c = self
            .container
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        c.ok_or_else(|| rpc_error(Code::NOT_FOUND, "no container in this shim"))
    }

    fn publish_exit(&self, container: &Container, exit: Exit) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        let event = TaskExit {
            container_id: container.id.clone(),
            id: container.id.clone(),
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

/// Refuses requests for exec'd processes (not done yet).
fn no_exec(exec_id: &str) -> TtrpcResult<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(unsupported("exec"))
    }
}

impl containerd_shim::Shim for Service {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            socket: args.socket.clone(),
            container: Arc::new(Mutex::new(None)),
            publisher: None,
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> Result<String, containerd_shim::Error> {
        let grouping = opts.id.clone();
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        Ok(address)
    }

    /// containerd runs `delete` in the bundle when a shim died: end its VM, remove files.
    fn delete_shim(&mut self) -> Result<DeleteResponse, containerd_shim::Error> {
        let bundle = std::env::current_dir().map_err(|err| containerd_shim::Error::IoError {
            context: "the bundle (the working directory)".into(),
            err,
        })?;
        crate::vm::clean_up_after(&bundle);
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
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.container().map(|c| c.pid).unwrap_or_default();
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
        if req.terminal {
            return Err(unsupported("a terminal (-t)"));
        }
        if !req.checkpoint.is_empty() {
            return Err(unsupported("restoring a checkpoint"));
        }
        let mut slot = self.container.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Err(unsupported("a second container in one shim (pods)"));
        }
        let config = ShimConfig::load().map_err(|e| rpc_error(Code::FAILED_PRECONDITION, e))?;
        let stdio = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        };
        let bundle = std::path::Path::new(&req.bundle);
        let container =
            Container::create(&req.id, bundle, &req.rootfs, stdio, &config).map_err(to_rpc)?;
        let pid = container.pid;
        *slot = Some(container);
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
        no_exec(&req.exec_id)?;
        let container = self.container()?;
        let config = ShimConfig::load().map_err(|e| rpc_error(Code::FAILED_PRECONDITION, e))?;
        let me = self.clone();
        let c = container.clone();
        let on_exit = Box::new(move |exit| me.publish_exit(&c, exit));
        let boot = Duration::from_secs(config.boot_timeout_secs());
        let pid = container.start(boot, on_exit).map_err(to_rpc)?;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        no_exec(&req.exec_id)?;
        let c = self.container()?;
        let (status, exit) = c.status();
        let status = match status {
            Status::Created => TaskStatus::CREATED,
            Status::Running => TaskStatus::RUNNING,
            Status::Stopped => TaskStatus::STOPPED,
        };
        Ok(api::StateResponse {
            id: c.id.clone(),
            bundle: c.bundle.display().to_string(),
            pid: c.pid,
            status: status.into(),
            stdin: c.stdio.stdin.clone(),
            stdout: c.stdio.stdout.clone(),
            stderr: c.stdio.stderr.clone(),
            exit_status: exit.map(|e| e.status).unwrap_or_default(),
            exited_at: exit.map(|e| timestamp(e.at)).unwrap_or_default(),
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        no_exec(&req.exec_id)?;
        self.container()?.kill(req.signal).map_err(to_rpc)?;
        Ok(api::Empty::default())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        no_exec(&req.exec_id)?;
        let exit = self.container()?.wait();
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
        no_exec(&req.exec_id)?;
        let c = self.container()?;
        let exit = c.delete().map_err(to_rpc)?;
        Ok(api::DeleteResponse {
            pid: c.pid,
            exit_status: exit.status,
            exited_at: timestamp(exit.at),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, _req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let c = self.container()?;
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

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        no_exec(&req.exec_id)?;
        if req.stdin {
            let _ = self
                .container()?
                .send(&agent::protocol::HostMessage::CloseStdin);
        }
        Ok(api::Empty::default())
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        let running = self
            .container()
            .is_ok_and(|c| c.status().0 == Status::Running);
        if !running {
            self.exit.signal();
        }
        Ok(api::Empty::default())
    }
}
