//! One container and its microVM, free of ttrpc: Create prepares the initramfs and boots
//! the VM, Start runs the process through the agent, then the output and the exit status
//! come back over the agent's stream ([`crate::stream`]).

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use agent::protocol::{
    read_frame, valid_signal, write_frame, AgentMessage, HostMessage, ProtocolError,
};
use containerd_shim::protos::types::mount::Mount;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::ShimConfig;
use crate::initramfs::{self, InitramfsError};
use crate::oci::{self, BundleSpec, SpecError};
use crate::rootfs::{MountedRoot, RootfsError};
use crate::stream;
use crate::vm::{Vm, VmError, VmFiles};

/// How long the VM has to power off after the process exits before it is killed.
const POWER_OFF_GRACE: Duration = Duration::from_secs(20);
/// How long Delete waits for the VM to go.
const DELETE_WAIT: Duration = Duration::from_secs(60);

/// Errors of the container's life cycle.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("the agent: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("the agent could not start the process: {0}")]
    Agent(String),
    #[error("the agent said {0:?} where it should have said {1}")]
    Unexpected(Box<AgentMessage>, &'static str),
    #[error("the VM ended before the process started")]
    AgentGone,
    #[error("{0}")]
    State(String),
    #[error("signal {0} is not a signal number")]
    Signal(u32),
}

/// Where the task stands (containerd's `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
}

/// containerd's stdio paths (FIFOs; empty when unused).
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

pub(crate) struct State {
    pub status: Status,
    pub exit: Option<Exit>,
    pub vm: Option<Vm>,
    /// The VM is gone and its files removed.
    pub vm_gone: bool,
    /// The host's writing half of the agent's stream.
    pub agent: Option<UnixStream>,
}

/// One container in one microVM.
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub stdio: StdioPaths,
    /// The VMM's process id: the task's pid as containerd sees it.
    pub pid: u32,
    spec: BundleSpec,
    state: Mutex<State>,
    changed: Condvar,
}

impl Container {
    /// Reads the bundle, copies the container's root into the VM's initramfs and boots the
    /// VM; the agent connects while containerd goes on.
    pub fn create(
        id: &str,
        bundle: &Path,
        rootfs: &[Mount],
        stdio: StdioPaths,
        config: &ShimConfig,
    ) -> Result<Arc<Container>, ContainerError> {
        let spec = oci::load(bundle)?;
        let files = VmFiles::in_dir(bundle);
        let root = MountedRoot::mount(rootfs, &spec.root)?;
        let built = initramfs::build(&config.initrd, &config.agent, &spec.root, &files.initramfs);
        root.unmount()?;
        if let Err(e) = built {
            files.remove();
            return Err(e.into());
        }
        let vm = Vm::boot(config, files.clone()).inspect_err(|_| files.remove())?;
        tracing::info!("container {id}: vessel {} boots its VM", vm.pid());
        Ok(Arc::new(Container {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            stdio,
            pid: vm.pid(),
            spec,
            state: Mutex::new(State {
                status: Status::Created,
                exit: None,
                vm: Some(vm),
                vm_gone: false,
                agent: None,
            }),
            changed: Condvar::new(),
        }))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for the agent, runs the process, and hands the stream to a thread that
    /// copies output to containerd's FIFOs and reports the exit through `on_exit`.
    pub fn start(
        self: &Arc<Self>,
        boot_timeout: Duration,
        on_exit: Box<dyn FnOnce(Exit) + Send>,
    ) -> Result<u32, ContainerError> {
        let mut vm = {
            let mut state = self.lock();
            if state.status != Status::Created {
                return Err(ContainerError::State(format!(
                    "{} was started already",
                    self.id
                )));
            }
            state
                .vm
                .take()
                .ok_or_else(|| ContainerError::State("no VM".into()))?
        };
        let started = self.run_in(&mut vm, boot_timeout);
        let mut state = self.lock();
        state.vm = Some(vm);
        let (stream, guest_pid) = match started {
            Ok(s) => s,
            Err(e) => {
                drop(state);
                self.finish(255);
                return Err(e);
            }
        };
        if state.status == Status::Stopped {
            drop(state);
            self.finish(255);
            return Err(ContainerError::State(format!(
                "{} was killed while it started",
                self.id
            )));
        }
        tracing::info!("container {}: process {guest_pid} runs in the VM", self.id);
        let reader = stream
            .try_clone()
            .map_err(|e| ContainerError::Protocol(e.into()))?;
        state.agent = Some(stream);
        state.status = Status::Running;
        drop(state);
        let me = self.clone();
        std::thread::spawn(move || {
            let status = stream::copy_output(reader, &me.stdio);
            me.finish(status);
            on_exit(me.wait());
        });
        stream::forward_stdin(self.clone());
        Ok(self.pid)
    }

    /// Connects to the agent and has it start the process: (stream, guest pid).
    fn run_in(
        &self,
        vm: &mut Vm,
        boot_timeout: Duration,
    ) -> Result<(UnixStream, u32), ContainerError> {
        let mut stream = vm.accept_agent(boot_timeout)?;
        match read_frame::<_, AgentMessage>(&mut stream)? {
            Some(AgentMessage::Ready { kernel }) => {
                tracing::info!("container {}: agent ready on kernel {kernel}", self.id)
            }
            Some(other) => return Err(ContainerError::Unexpected(Box::new(other), "ready")),
            None => return Err(ContainerError::AgentGone),
        }
        let container = Box::new(self.spec.container.clone());
        write_frame(&mut stream, &HostMessage::Run { container })?;
        match read_frame::<_, AgentMessage>(&mut stream)? {
            Some(AgentMessage::Started { pid }) => Ok((stream, pid)),
            Some(AgentMessage::Error { message }) => Err(ContainerError::Agent(message)),
            Some(other) => Err(ContainerError::Unexpected(Box::new(other), "started")),
            None => Err(ContainerError::AgentGone),
        }
    }

    /// Sends a message to the agent (stdin, signals, shutdown).
    pub(crate) fn send(&self, message: &HostMessage) -> Result<(), ContainerError> {
        let mut state = self.lock();
        let agent = state
            .agent
            .as_mut()
            .ok_or_else(|| ContainerError::State("not running".into()))?;
        Ok(write_frame(agent, message)?)
    }

    /// Records the exit (the first one counts), tells the agent to power off, stops the VM
    /// and removes its files.
    fn finish(&self, status: u32) {
        let vm = {
            let mut state = self.lock();
            if state.exit.is_none() {
                state.exit = Some(Exit {
                    status,
                    at: SystemTime::now(),
                });
            }
            state.status = Status::Stopped;
            if let Some(mut agent) = state.agent.take() {
                let _ = write_frame(&mut agent, &HostMessage::Shutdown);
            }
            self.changed.notify_all();
            state.vm.take()
        };
        if let Some(vm) = vm {
            vm.stop(POWER_OFF_GRACE);
        }
        self.lock().vm_gone = true;
        self.changed.notify_all();
    }

    /// Delivers `signal` to the process; before Start it ends the VM.
    pub fn kill(&self, signal: u32) -> Result<(), ContainerError> {
        let sig = i32::try_from(signal).ok().filter(|&s| valid_signal(s));
        let sig = sig.ok_or(ContainerError::Signal(signal))?;
        let status = self.lock().status;
        match status {
            Status::Running => self.send(&HostMessage::Signal { signal: sig }),
            Status::Created => {
                // The VMM itself: Start may be waiting for the agent without holding the VM.
                let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
                self.finish(128 + signal);
                Ok(())
            }
            Status::Stopped => Err(ContainerError::State(format!("{} is not running", self.id))),
        }
    }

    /// Blocks until the process has exited.
    pub fn wait(&self) -> Exit {
        let mut state = self.lock();
        loop {
            if let Some(exit) = state.exit {
                return exit;
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The status, and the exit once there is one.
    pub fn status(&self) -> (Status, Option<Exit>) {
        let state = self.lock();
        (state.status, state.exit)
    }

    /// Ends the VM if it still runs (a container never started), waits until its files are
    /// gone, and returns the exit. A running process must be killed first.
    pub fn delete(&self) -> Result<Exit, ContainerError> {
        let status = self.lock().status;
        match status {
            Status::Running => {
                return Err(ContainerError::State(format!(
                    "{} is still running",
                    self.id
                )))
            }
            Status::Created => {
                let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
                self.finish(128 + Signal::SIGKILL as u32);
            }
            Status::Stopped => {}
        }
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, DELETE_WAIT, |s| !s.vm_gone)
            .unwrap_or_else(|p| p.into_inner());
        let exit = state.exit.unwrap_or(Exit {
            status: 255,
            at: SystemTime::now(),
        });
        drop(state);
        crate::vm::clean_up_after(&self.bundle);
        Ok(exit)
    }
}
