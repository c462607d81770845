//! Processes the host adds to the running container (containerd's Exec): each runs in the
//! container's root, chrooted like the container's process, over a connection of its own
//! to the host (its first frame names it), and is killed when the container's process
//! ends, as the end of a container's PID namespace kills the rest.

use std::fs::File;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::process;
use crate::protocol::{AgentMessage, ProcessSpec, ProtocolError};
use crate::session::{
    control, report_start, run_to_exit, send, ExecContext, Input, SessionError, Writer,
};

/// Opens a new connection to the host (vsock in the guest; a socket pair in tests).
pub type Connect = Arc<dyn Fn() -> std::io::Result<File> + Send + Sync>;

/// The exec'd processes of one container.
#[derive(Clone, Default)]
pub struct Execs(Arc<Mutex<Table>>);

#[derive(Default)]
struct Table {
    /// The container's process has ended: processes started from now on are killed.
    ended: bool,
    /// The guest pids of the exec'd processes that run and are not yet reaped.
    running: Vec<u32>,
    threads: Vec<JoinHandle<()>>,
}

impl Execs {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts exec'd process `id` on a thread of its own.
    pub(crate) fn start(&self, id: String, spec: ProcessSpec, context: &ExecContext) {
        let (root, connect, execs) = (context.root.clone(), context.connect.clone(), self.clone());
        let cgroup = context.cgroup.clone();
        self.spawn(move || {
            if let Err(e) = run(&id, &spec, (&root, cgroup.as_deref()), &connect, &execs) {
                println!("vessel-agent: exec {id}: {e}");
            }
        });
    }

    /// Runs `serve` on a thread that [`Execs::end_all`] waits for.
    pub(crate) fn spawn(&self, serve: impl FnOnce() + Send + 'static) {
        let thread = thread::spawn(serve);
        self.lock().threads.push(thread);
    }

    /// Records a started process; kills it at once if the container has ended.
    pub(crate) fn started(&self, pid: u32) {
        let mut table = self.lock();
        if table.ended {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        table.running.push(pid);
    }

    /// Forgets a process that has exited (called before it is reaped, so its pid cannot
    /// have been reused when [`Execs::end_all`] kills the ones that run).
    pub(crate) fn exited(&self, pid: u32) {
        self.lock().running.retain(|&p| p != pid);
    }

    /// Kills every exec'd process and waits until each has reported its exit.
    pub(crate) fn end_all(&self) {
        let threads = {
            let mut table = self.lock();
            table.ended = true;
            for &pid in &table.running {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            std::mem::take(&mut table.threads)
        };
        for t in threads {
            let _ = t.join();
        }
    }
}

/// One exec'd process: connect, say which it is, start it (in the container's root and
/// cgroup), report its output and exit.
fn run(
    id: &str,
    spec: &ProcessSpec,
    (root, cgroup): (&Path, Option<&Path>),
    connect: &Connect,
    execs: &Execs,
) -> Result<(), SessionError> {
    let stream = connect().map_err(ProtocolError::Io)?;
    let reader = stream.try_clone().map_err(ProtocolError::Io)?;
    let writer: Writer = Arc::new(Mutex::new(stream));
    let id = id.to_string();
    send(&writer, &AgentMessage::Attach { id })?;
    let spawned = spec
        .validate()
        .map_err(SessionError::from)
        .and_then(|()| Ok(process::spawn(root, spec, cgroup)?));
    let mut started = report_start(&writer, spawned)?;
    let pid = started.child.id();
    execs.started(pid);
    let input = Input::of(&mut started)?;
    let (done, _) = mpsc::channel();
    thread::spawn(move || control(reader, pid, input, None, done));
    let status = run_to_exit(&mut started, &writer, &|| execs.exited(pid))?;
    send(&writer, &AgentMessage::Exited { status })?;
    Ok(())
}
