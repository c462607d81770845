//! One container and its microVM, free of ttrpc: Create prepares the initramfs and boots
//! the VM, Start runs the process through the agent, then the output and the exit status
//! come back over the agent's stream ([`crate::stream`]).

use std::collections::HashMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use agent::protocol::{
    read_frame, valid_id, valid_signal, write_frame, AgentMessage, CgroupStats, HostMessage,
    Limits, ProcessSpec, ProtocolError,
};
use containerd_shim::protos::types::mount::Mount;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::answer::{Answer, AnswerWait, ANSWER_WAIT};
use crate::config::ShimConfig;
use crate::exec::ExecProcess;
use crate::initramfs::{self, InitramfsError};
use crate::oci::{BundleSpec, PodRole, SpecError};
use crate::podnet::{self, PodNetError, PodNic};
use crate::rootfs::{MountedRoot, RootfsError};
use crate::stream;
use crate::vm::{BootExtras, Vm, VmError, VmFiles};
use crate::volumes;

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
    #[error("the pod's network: {0}")]
    PodNet(#[from] PodNetError),
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
    #[error("no exec {0:?} in this container")]
    NoExec(String),
    #[error("exec {0:?} exists already")]
    ExecExists(String),
    #[error("exec id {0:?}: 1 to 128 letters, digits, '-', '_' or '.'")]
    ExecId(String),
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

impl Exit {
    /// An exit with `status`, now.
    pub fn now(status: u32) -> Exit {
        Exit {
            status,
            at: SystemTime::now(),
        }
    }
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
    /// Frozen by Pause (until Resume).
    pub paused: bool,
}

/// Blocks on `changed` until `exit_of` finds an exit in the state `guard` guards.
pub(crate) fn wait_for_exit<T>(
    mut guard: MutexGuard<'_, T>,
    changed: &Condvar,
    exit_of: impl Fn(&T) -> Option<Exit>,
) -> Exit {
    loop {
        if let Some(exit) = exit_of(&guard) {
            return exit;
        }
        guard = changed.wait(guard).unwrap_or_else(|p| p.into_inner());
    }
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
    execs: Mutex<Execs>,
    /// Held while one exec starts: the agent's next connection is that exec's.
    exec_start: Mutex<()>,
    /// Keeps the process's stdin open until CloseIO.
    stdin_hold: stream::StdinHold,
    /// The question (Stats, Update, Pause, Resume) the agent has yet to answer.
    answers: AnswerWait,
    place: Place,
}

/// The pod's interface in `netns` with the VM's tap connected to it, if the spec names a
/// network namespace with one (the CNI's, for a pod's sandbox).
fn connect_pod_network(netns: Option<&Path>) -> Result<Option<(PathBuf, PodNic)>, PodNetError> {
    let Some(netns) = netns else {
        return Ok(None);
    };
    let Some(nic) = podnet::discover(netns)? else {
        tracing::info!("{}: no interface with an address: no NIC", netns.display());
        return Ok(None);
    };
    podnet::connect(netns, &nic)?;
    tracing::info!("{}: the VM joins {nic:?}", netns.display());
    Ok(Some((netns.to_path_buf(), nic)))
}

/// Where a container's process runs.
enum Place {
    /// In a VM of its own, kept in the state (a lone container, or a pod's sandbox), with
    /// the pod's network it joined.
    OwnVm { net: Option<(PathBuf, PodNic)> },
    /// In its pod's sandbox's VM; its root (containerd's snapshot, mounted in the bundle
    /// until Delete) is bound into that VM's share.
    Pod {
        sandbox: Arc<Container>,
        root: Mutex<Option<MountedRoot>>,
    },
}

/// The exec'd processes, and the listener their connections arrive on.
#[derive(Default)]
struct Execs {
    listener: Option<UnixListener>,
    processes: HashMap<String, Arc<ExecProcess>>,
}

impl Container {
    /// Reads the bundle, copies the container's root into the VM's initramfs and boots the
    /// VM; the agent connects while containerd goes on.
    pub fn create(
        id: &str,
        bundle: &Path,
        spec: BundleSpec,
        rootfs: &[Mount],
        stdio: StdioPaths,
        config: &ShimConfig,
    ) -> Result<Arc<Container>, ContainerError> {
        let files = VmFiles::in_dir(bundle);
        let root = MountedRoot::mount(rootfs, &spec.root)?;
        let built = initramfs::build(&config.initrd, &config.agent, &spec.root, &files.initramfs);
        root.unmount()?;
        if let Err(e) = built {
            files.remove();
            return Err(e.into());
        }
        // A pod's VM holds the pod's resources when the kubelet gave them, else the
        // container's own limits.
        let limits = spec.pod_limits.as_ref().or(spec.container.limits.as_ref());
        // A pod's VM always gets the share: its later containers' volumes go there.
        let share = !spec.volumes.is_empty() || spec.pod == PodRole::Sandbox;
        let share = share.then_some((id, spec.volumes.as_slice()));
        let net = connect_pod_network(spec.netns.as_deref()).inspect_err(|_| files.remove())?;
        let extras = BootExtras {
            share,
            net: net.as_ref().map(|(ns, nic)| (ns.as_path(), nic)),
        };
        let vm = Vm::boot(config, files.clone(), limits, extras).inspect_err(|_| {
            files.remove();
            if let Some((netns, nic)) = &net {
                podnet::disconnect(netns, nic);
            }
        })?;
        tracing::info!("container {id}: vessel {} boots its VM", vm.pid());
        let pid = vm.pid();
        let at = (bundle, pid, Some(vm), Place::OwnVm { net });
        Ok(Container::new(id, at, spec, stdio))
    }

    /// A container in state Created: (its bundle, the task's pid, its own VM, where it runs).
    fn new(
        id: &str,
        (bundle, pid, vm, place): (&Path, u32, Option<Vm>, Place),
        spec: BundleSpec,
        stdio: StdioPaths,
    ) -> Arc<Container> {
        Arc::new(Container {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            stdio,
            pid,
            spec,
            state: Mutex::new(State {
                status: Status::Created,
                exit: None,
                vm,
                vm_gone: false,
                agent: None,
                paused: false,
            }),
            changed: Condvar::new(),
            execs: Mutex::new(Execs::default()),
            exec_start: Mutex::new(()),
            stdin_hold: stream::StdinHold::default(),
            answers: AnswerWait::default(),
            place,
        })
    }

    /// Reads the bundle, mounts the container's root and binds it and its volumes into the
    /// share of its pod's VM, where `sandbox` runs.
    pub fn create_in_pod(
        id: &str,
        bundle: &Path,
        spec: BundleSpec,
        rootfs: &[Mount],
        stdio: StdioPaths,
        sandbox: Arc<Container>,
    ) -> Result<Arc<Container>, ContainerError> {
        let root = MountedRoot::mount(rootfs, &spec.root)?;
        let share = VmFiles::in_dir(&sandbox.bundle).volumes;
        let readonly = spec.container.readonly_root;
        volumes::bind_root(&share, id, &spec.root, readonly)
            .and_then(|()| volumes::bind_all(&share, id, &spec.volumes))
            .map_err(VmError::from)?;
        tracing::info!("container {id}: joins pod {}", sandbox.id);
        let root = Mutex::new(Some(root));
        let at = (bundle, sandbox.pid, None, Place::Pod { sandbox, root });
        Ok(Container::new(id, at, spec, stdio))
    }

    /// Whether this container boots a VM of its own (a pod's sandbox, or a lone one).
    pub fn owns_vm(&self) -> bool {
        matches!(self.place, Place::OwnVm { .. })
    }

    /// The container whose VM this one runs in (itself, or its pod's sandbox): the
    /// agent's connections for exec'd processes and pod containers arrive on its listener,
    /// one at a time.
    pub(crate) fn vm_owner(&self) -> &Container {
        match &self.place {
            Place::OwnVm { .. } => self,
            Place::Pod { sandbox, .. } => sandbox,
        }
    }

    /// A handle of the agent listener of the VM this container runs in, held one attach at a
    /// time: (the guard, the listener).
    pub(crate) fn attach_turn(&self) -> Result<(MutexGuard<'_, ()>, UnixListener), ContainerError> {
        let owner = self.vm_owner();
        let turn = owner.exec_start.lock().unwrap_or_else(|p| p.into_inner());
        let listener = owner
            .lock_execs()
            .listener
            .as_ref()
            .map(UnixListener::try_clone);
        let listener = listener
            .ok_or_else(|| ContainerError::State(format!("{}'s VM is not running", owner.id)))?
            .map_err(|e| ContainerError::Protocol(e.into()))?;
        Ok((turn, listener))
    }

    /// The agent's view of the container.
    pub(crate) fn container_spec(&self) -> &agent::protocol::ContainerSpec {
        &self.spec.container
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs the process (in its own VM once the agent is there, or in its pod's VM) and
    /// hands its stream to a thread that copies output to containerd's FIFOs and reports
    /// the exit through `on_exit`.
    pub fn start(
        self: &Arc<Self>,
        boot_timeout: Duration,
        on_exit: Box<dyn FnOnce(Exit) + Send>,
    ) -> Result<u32, ContainerError> {
        if self.lock().status != Status::Created {
            return Err(ContainerError::State(format!(
                "{} was started already",
                self.id
            )));
        }
        let started = match &self.place {
            Place::OwnVm { .. } => self.start_in_own_vm(boot_timeout),
            Place::Pod { sandbox, .. } => crate::pod::start_in(self, sandbox),
        };
        let mut state = self.lock();
        let stream = match started {
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
        let reader = stream
            .try_clone()
            .map_err(|e| ContainerError::Protocol(e.into()))?;
        state.agent = Some(stream);
        state.status = Status::Running;
        drop(state);
        let me = self.clone();
        std::thread::spawn(move || {
            let status = stream::copy_output(reader, &me.stdio, &|a| me.answers.deliver(a));
            me.finish(status);
            on_exit(me.wait());
        });
        let me = self.clone();
        stream::forward_stdin(self.stdio.stdin.clone(), &self.stdin_hold, move |m| {
            me.send(m).is_ok()
        });
        Ok(self.pid)
    }

    /// Waits for the agent of the container's own VM and has it start the process; the
    /// agent's main stream.
    fn start_in_own_vm(&self, boot_timeout: Duration) -> Result<UnixStream, ContainerError> {
        let mut vm = self
            .lock()
            .vm
            .take()
            .ok_or_else(|| ContainerError::State("no VM".into()))?;
        let started = self.run_in(&mut vm, boot_timeout);
        let listener = vm.listener();
        self.lock().vm = Some(vm);
        let (stream, guest_pid) = started?;
        tracing::info!("container {}: process {guest_pid} runs in the VM", self.id);
        self.lock_execs().listener = Some(listener?);
        Ok(stream)
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

    /// Asks the agent `question` on the container's connection and waits for the answer.
    fn ask(&self, question: &HostMessage, what: &str) -> Result<Answer, ContainerError> {
        let asked = self.answers.ask(|| self.send(question), ANSWER_WAIT)?;
        asked.ok_or_else(|| {
            ContainerError::State(format!(
                "{}: the agent did not answer {what} within {ANSWER_WAIT:?}",
                self.id
            ))
        })
    }

    /// Asks for something the agent answers with `Done`.
    fn ask_done(&self, question: &HostMessage, what: &str) -> Result<(), ContainerError> {
        match self.ask(question, what)? {
            Answer::Done(None) => Ok(()),
            Answer::Done(Some(error)) => Err(ContainerError::Agent(format!("{what}: {error}"))),
            other => Err(ContainerError::State(format!(
                "{what}: the agent answered {other:?}"
            ))),
        }
    }

    /// The container's resource use in the guest (its cgroup's counters), from the agent.
    pub fn stats(&self) -> Result<CgroupStats, ContainerError> {
        match self.ask(&HostMessage::Stats, "stats")? {
            Answer::Stats(stats) => Ok(stats),
            other => Err(ContainerError::State(format!(
                "stats: the agent answered {other:?}"
            ))),
        }
    }

    /// Sets the limits given on the running container (containerd's Update); the VM is not
    /// resized.
    pub fn update(&self, limits: Limits) -> Result<(), ContainerError> {
        limits.validate()?;
        self.ask_done(&HostMessage::Update { limits }, "update")
    }

    /// Pauses (freezes) or resumes the container's processes in the guest.
    pub fn set_paused(&self, paused: bool) -> Result<(), ContainerError> {
        let what = if paused { "pause" } else { "resume" };
        if self.lock().status != Status::Running {
            return Err(ContainerError::State(format!("{} is not running", self.id)));
        }
        self.ask_done(&HostMessage::Freeze { frozen: paused }, what)?;
        self.lock().paused = paused;
        Ok(())
    }

    /// CloseIO: the process's stdin ends once the client has closed its side too.
    pub fn close_stdin(&self) {
        self.stdin_hold.release();
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
        self.stdin_hold.release();
        let vm = {
            let mut state = self.lock();
            state.exit.get_or_insert(Exit::now(status));
            state.status = Status::Stopped;
            if let Some(mut agent) = state.agent.take() {
                // A pod's container only closes its own connection: the VM is the pod's.
                if self.owns_vm() {
                    let _ = write_frame(&mut agent, &HostMessage::Shutdown);
                }
            }
            self.changed.notify_all();
            state.vm.take()
        };
        if let Some(vm) = vm {
            vm.stop(POWER_OFF_GRACE);
        }
        if let Place::OwnVm {
            net: Some((netns, nic)),
        } = &self.place
        {
            podnet::disconnect(netns, nic);
        }
        if let Place::Pod { sandbox, root } = &self.place {
            volumes::unbind_all(&VmFiles::in_dir(&sandbox.bundle).volumes, &self.id);
            let root = root.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Err(e) = root.map_or(Ok(()), MountedRoot::unmount) {
                tracing::warn!("container {}: {e}", self.id);
            }
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
                // The VMM itself: Start may be waiting for the agent without holding the VM
                // (a pod's container has nothing running yet).
                if self.owns_vm() {
                    let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
                }
                self.finish(128 + signal);
                Ok(())
            }
            Status::Stopped => Err(ContainerError::State(format!("{} is not running", self.id))),
        }
    }

    /// Blocks until the process has exited.
    pub fn wait(&self) -> Exit {
        wait_for_exit(self.lock(), &self.changed, |s| s.exit)
    }

    /// The status, and the exit once there is one.
    pub fn status(&self) -> (Status, Option<Exit>) {
        let state = self.lock();
        (state.status, state.exit)
    }

    /// Whether Pause froze the running process (and no Resume thawed it yet).
    pub fn paused(&self) -> bool {
        let state = self.lock();
        state.paused && state.status == Status::Running
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
                if self.owns_vm() {
                    let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
                }
                self.finish(128 + Signal::SIGKILL as u32);
            }
            Status::Stopped => {}
        }
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, DELETE_WAIT, |s| !s.vm_gone)
            .unwrap_or_else(|p| p.into_inner());
        let exit = state.exit.unwrap_or(Exit::now(255));
        drop(state);
        crate::vm::clean_up_after(&self.bundle);
        Ok(exit)
    }

    fn lock_execs(&self) -> MutexGuard<'_, Execs> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records exec'd process `id` (containerd's Exec); it runs at [`Container::start_exec`].
    pub fn add_exec(
        &self,
        id: &str,
        stdio: StdioPaths,
        spec: ProcessSpec,
    ) -> Result<(), ContainerError> {
        if !valid_id(id) {
            return Err(ContainerError::ExecId(id.to_string()));
        }
        if self.lock().status != Status::Running {
            return Err(ContainerError::State(format!("{} is not running", self.id)));
        }
        let mut execs = self.lock_execs();
        if execs.processes.contains_key(id) {
            return Err(ContainerError::ExecExists(id.to_string()));
        }
        let process = ExecProcess::new(id, stdio, spec);
        execs.processes.insert(id.to_string(), process);
        Ok(())
    }

    /// Exec'd process `id`.
    pub fn exec(&self, id: &str) -> Result<Arc<ExecProcess>, ContainerError> {
        let execs = self.lock_execs();
        let process = execs.processes.get(id).cloned();
        process.ok_or_else(|| ContainerError::NoExec(id.to_string()))
    }

    /// Starts exec'd process `id` in the VM; `on_exit` hears of its exit.
    pub fn start_exec(
        &self,
        id: &str,
        on_exit: Box<dyn FnOnce(Exit) + Send>,
    ) -> Result<(), ContainerError> {
        let process = self.exec(id)?;
        if self.lock().status != Status::Running {
            return Err(ContainerError::State(format!("{} is not running", self.id)));
        }
        let (_one_at_a_time, listener) = self.attach_turn()?;
        process.start(&listener, |m| self.send(&m), on_exit)
    }

    /// Forgets exec'd process `id` once it has exited; its exit.
    pub fn delete_exec(&self, id: &str) -> Result<Exit, ContainerError> {
        let process = self.exec(id)?;
        match process.status() {
            (Status::Running, _) => {
                Err(ContainerError::State(format!("exec {id} is still running")))
            }
            (_, exit) => {
                self.lock_execs().processes.remove(id);
                Ok(exit.unwrap_or(Exit::now(0)))
            }
        }
    }
}
