//! One container's life over the host's stream: `Ready`, the `Run` request, the process's
//! output as frames, signals and stdin from the host, `Exited`, then the host's `Shutdown`.
//! Processes the host adds with `Exec` run in the same root, each over a connection of its
//! own ([`crate::exec`]); they end when the container's process does.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag};
use nix::unistd::Pid;

use crate::exec::{Connect, Execs};
use crate::mounts::{self, MountError};
use crate::pod::{self, PodContext};
use crate::process::{self, ProcessError, Started};
use crate::protocol::{
    read_frame, valid_id, valid_signal, write_frame, AgentMessage, ContainerSpec, HostMessage,
    ProtocolError, MAX_CHUNK,
};

/// How long the agent waits for the host's `Shutdown` after reporting the exit.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// Errors that end a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("the host closed the stream before sending a process to run")]
    NoRun,
    #[error("wait for the process: {0}")]
    Wait(nix::Error),
    #[error("unpack the container's root: {0}")]
    Root(std::io::Error),
    #[error("the container's cgroup: {0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
}

/// The writing half of a connection, shared by the threads that report on it.
pub(crate) type Writer = Arc<Mutex<File>>;

pub(crate) fn send(writer: &Writer, message: &AgentMessage) -> Result<(), ProtocolError> {
    let mut w = writer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    write_frame(&mut *w, message)
}

/// What a connection's control loop needs to start exec'd processes (and, on the main
/// connection, the pod's further containers).
pub(crate) struct ExecContext {
    pub root: std::path::PathBuf,
    /// The container's cgroup, which its exec'd processes join.
    pub cgroup: Option<std::path::PathBuf>,
    pub connect: Connect,
    pub execs: Execs,
    pub pod: Option<PodContext>,
    /// The connection's writing half (for the answer to `Stats`).
    pub writer: Writer,
}

/// Where the agent puts what it runs.
#[derive(Debug, Clone)]
pub struct Places {
    /// The container's root (in a pod: the sandbox's).
    pub root: PathBuf,
    /// A pod's further container `id` gets the root `pod_dir/id/rootfs`.
    pub pod_dir: PathBuf,
    /// Where the VM's share of host directories is mounted ([`crate::protocol::VOLUMES_DIR`]):
    /// a pod container's root comes from there.
    pub share: PathBuf,
    /// Where the cgroup v2 hierarchy is (mounted there if it is not yet).
    pub cgroup_root: PathBuf,
}

/// Serves the host on `stream`: runs the container's process in `places.root` and returns
/// its exit status. `connect` opens the connection of each exec'd process and each further
/// container of the pod.
pub fn serve(
    stream: File,
    places: &Places,
    kernel: String,
    connect: Connect,
) -> Result<u32, SessionError> {
    let root = places.root.as_path();
    let mut reader = stream.try_clone().map_err(ProtocolError::Io)?;
    let writer: Writer = Arc::new(Mutex::new(stream));
    send(&writer, &AgentMessage::Ready { kernel })?;
    let container = loop {
        match read_frame::<_, HostMessage>(&mut reader)? {
            Some(HostMessage::Run { container }) => break container,
            Some(HostMessage::Shutdown) | None => return Err(SessionError::NoRun),
            Some(other) => {
                let message = format!("{other:?} before a process runs");
                send(&writer, &AgentMessage::Error { message })?;
            }
        }
    };
    let spawned = start(root, &container, "sandbox", &places.cgroup_root);
    let mut started = report_start(&writer, spawned)?;
    let pid = started.child.id();
    let (execs, members) = (Execs::default(), Execs::default());
    let context = ExecContext {
        root: root.to_path_buf(),
        cgroup: started.cgroup.clone(),
        connect,
        execs: execs.clone(),
        pod: Some(PodContext {
            dir: places.pod_dir.clone(),
            share: places.share.clone(),
            cgroup_root: places.cgroup_root.clone(),
            members: members.clone(),
        }),
        writer: writer.clone(),
    };
    let (shutdown_tx, shutdown_rx) = mpsc::channel();
    let input = Input::of(&mut started)?;
    thread::spawn(move || control(reader, pid, input, Some(context), shutdown_tx));
    let status = run_to_exit(&mut started, &writer, &|| {})?;
    // The container's end ends its other processes, as a PID namespace's end does; the
    // sandbox's end ends the pod.
    execs.end_all();
    members.end_all();
    if let Some(dir) = &started.cgroup {
        crate::cgroup::remove(dir);
    }
    send(&writer, &AgentMessage::Exited { status })?;
    let _ = shutdown_rx.recv_timeout(SHUTDOWN_WAIT);
    Ok(status)
}

/// Validates the container, prepares its root and starts its process in a cgroup
/// `vessel-<name>` (with the container's limits, when it has any; its counters are the
/// container's stats either way).
pub(crate) fn start(
    root: &Path,
    container: &ContainerSpec,
    name: &str,
    cgroup_root: &Path,
) -> Result<Started, SessionError> {
    container.validate()?;
    mounts::prepare(root, container)?;
    let limits = container.limits.clone().unwrap_or_default();
    let cgroup = crate::cgroup::create_in(cgroup_root, name, &limits)?;
    Ok(process::spawn(root, &container.process, Some(&cgroup))?)
}

/// The answer to a request about the container's cgroup at `dir`.
fn answer(request: &HostMessage, dir: &Path) -> AgentMessage {
    let done = |r: Result<(), crate::cgroup::CgroupError>| AgentMessage::Done {
        error: r.err().map(|e| e.to_string()),
    };
    match request {
        HostMessage::Update { limits } => done(crate::cgroup::set_limits(dir, limits)),
        HostMessage::Freeze { frozen } => done(crate::cgroup::freeze(dir, *frozen)),
        _ => AgentMessage::Stats {
            stats: Box::new(crate::cgroup::read_stats(dir)),
        },
    }
}

/// Reports a started process (`Started`, with its pid) or why it did not start (`Error`).
pub(crate) fn report_start(
    writer: &Writer,
    started: Result<Started, SessionError>,
) -> Result<Started, SessionError> {
    match started {
        Ok(started) => {
            let pid = started.child.id();
            send(writer, &AgentMessage::Started { pid })?;
            Ok(started)
        }
        Err(e) => {
            let message = e.to_string();
            send(writer, &AgentMessage::Error { message })?;
            Err(e)
        }
    }
}

/// Sends the output of `child` as frames on `writer` until it exits; its exit status once
/// all output is sent. `before_reap` runs once it has exited but before it is reaped (its
/// pid cannot have been reused yet).
pub(crate) fn run_to_exit(
    started: &mut Started,
    writer: &Writer,
    before_reap: &dyn Fn(),
) -> Result<u32, SessionError> {
    let child: &mut Child = &mut started.child;
    // A terminal's output (stdout and stderr together) is read from its master; reads end
    // with EIO once no process has the terminal open.
    let terminal = started.pty.as_ref().map(File::try_clone).transpose();
    let terminal = terminal.map_err(ProtocolError::Io)?;
    let pumps = [
        terminal.map(|master| pump(master, writer.clone(), Stream::Out)),
        child
            .stdout
            .take()
            .map(|out| pump(out, writer.clone(), Stream::Out)),
        child
            .stderr
            .take()
            .map(|err| pump(err, writer.clone(), Stream::Err)),
    ];
    let pid = Pid::from_raw(child.id() as i32);
    let exited = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    waitid(Id::Pid(pid), exited).map_err(SessionError::Wait)?;
    before_reap();
    let status = waitpid(pid, None).map_err(SessionError::Wait)?;
    let status = process::exit_status(status).unwrap_or(255);
    for p in pumps.into_iter().flatten() {
        let _ = p.join();
    }
    Ok(status)
}

enum Stream {
    Out,
    Err,
}

/// Copies one of the process's output pipes to the host as frames until it closes.
fn pump<R: Read + Send + 'static>(
    mut pipe: R,
    writer: Writer,
    stream: Stream,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            let data = match pipe.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.get(..n).unwrap_or_default().to_vec(),
            };
            let message = match stream {
                Stream::Out => AgentMessage::Stdout { data },
                Stream::Err => AgentMessage::Stderr { data },
            };
            if send(&writer, &message).is_err() {
                return;
            }
        }
    })
}

/// Where the host's input for a process goes: its stdin pipe, or its terminal.
pub(crate) struct Input {
    stdin: Option<Box<dyn Write + Send>>,
    pty: Option<File>,
}

impl Input {
    /// Takes the stdin of a started process (a handle of its terminal's master).
    pub(crate) fn of(started: &mut Started) -> Result<Input, ProtocolError> {
        Ok(match &started.pty {
            Some(master) => Input {
                stdin: Some(Box::new(master.try_clone()?)),
                pty: Some(master.try_clone()?),
            },
            None => Input {
                stdin: started
                    .child
                    .stdin
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Write + Send>),
                pty: None,
            },
        })
    }
}

/// Carries out the host's requests for process `pid` while it runs (and, on the main
/// connection, starts exec'd processes); says when the host is done.
pub(crate) fn control(
    mut reader: File,
    pid: u32,
    mut input: Input,
    context: Option<ExecContext>,
    done: mpsc::Sender<()>,
) {
    loop {
        match read_frame::<_, HostMessage>(&mut reader) {
            Ok(Some(HostMessage::Signal { signal })) if valid_signal(signal) => {
                if let Ok(sig) = Signal::try_from(signal) {
                    let _ = kill(Pid::from_raw(pid as i32), sig);
                }
            }
            Ok(Some(HostMessage::Stdin { data })) => {
                if let Some(w) = input.stdin.as_mut() {
                    if w.write_all(&data).is_err() {
                        input.stdin = None;
                    }
                }
            }
            Ok(Some(HostMessage::CloseStdin)) if input.pty.is_none() => input.stdin = None,
            Ok(Some(HostMessage::CloseStdin)) => {}
            Ok(Some(HostMessage::Resize { rows, cols })) => {
                if let Some(pty) = &input.pty {
                    let _ = process::resize(pty, rows, cols);
                }
            }
            Ok(Some(HostMessage::Exec { id, process })) => match &context {
                Some(c) if valid_id(&id) => c.execs.start(id, *process, c),
                // An exec on an exec's connection or a bad id: the host's wait for the
                // Attach times out.
                _ => {}
            },
            Ok(Some(HostMessage::Container { id, container })) => match &context {
                Some(c @ ExecContext { pod: Some(_), .. }) if valid_id(&id) => {
                    pod::start(id, *container, c)
                }
                // Only the main connection starts containers; as with a bad exec, the
                // host's wait for the Attach times out.
                _ => {}
            },
            Ok(Some(
                request @ (HostMessage::Stats
                | HostMessage::Update { .. }
                | HostMessage::Freeze { .. }),
            )) => {
                // On a container's connection; an exec's has no group of its own (the
                // host's wait for the answer times out).
                if let Some(ExecContext {
                    cgroup: Some(dir),
                    writer,
                    ..
                }) = &context
                {
                    let _ = send(writer, &answer(&request, dir));
                }
            }
            // A bad signal number or a second Run: ignored, the process keeps running.
            Ok(Some(HostMessage::Signal { .. } | HostMessage::Run { .. })) => {}
            Ok(Some(HostMessage::Shutdown)) | Ok(None) | Err(_) => {
                let _ = done.send(());
                return;
            }
        }
    }
}
