//! Processes containerd adds to a running container (`ctr task exec`, CRI's ExecSync): the
//! agent runs each in the container's root and reports it over a vsock connection of its
//! own, which it opens to the shim's agent listener and names with `Attach` first.

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use agent::protocol::{
    read_frame, valid_signal, write_frame, AgentMessage, HostMessage, ProcessSpec,
};

use crate::container::{wait_for_exit, ContainerError, Exit, Status, StdioPaths};
use crate::stream;

/// How long the agent has to connect for an exec'd process and start it (a process start
/// takes seconds where the guest's ring 0 is emulated, and the host may be loaded).
pub const EXEC_START_WAIT: Duration = Duration::from_secs(120);

/// One exec'd process.
pub struct ExecProcess {
    pub id: String,
    pub stdio: StdioPaths,
    spec: ProcessSpec,
    state: Mutex<ExecState>,
    changed: Condvar,
    /// Keeps the process's stdin open until CloseIO.
    stdin_hold: stream::StdinHold,
}

struct ExecState {
    status: Status,
    exit: Option<Exit>,
    /// The host's writing half of the process's connection.
    conn: Option<UnixStream>,
}

impl ExecProcess {
    pub fn new(id: &str, stdio: StdioPaths, spec: ProcessSpec) -> Arc<ExecProcess> {
        Arc::new(ExecProcess {
            id: id.to_string(),
            stdio,
            spec,
            state: Mutex::new(ExecState {
                status: Status::Created,
                exit: None,
                conn: None,
            }),
            changed: Condvar::new(),
            stdin_hold: stream::StdinHold::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ExecState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Has the agent start the process (`request` sends [`HostMessage::Exec`] on the main
    /// connection), takes its connection from `listener`, and hands it to a thread that
    /// copies the output to containerd's FIFOs and reports the exit through `on_exit`.
    pub fn start(
        self: &Arc<Self>,
        listener: &UnixListener,
        request: impl FnOnce(HostMessage) -> Result<(), ContainerError>,
        on_exit: Box<dyn FnOnce(Exit) + Send>,
    ) -> Result<(), ContainerError> {
        if self.lock().status != Status::Created {
            return Err(ContainerError::State(format!(
                "exec {} was started already",
                self.id
            )));
        }
        let process = Box::new(self.spec.clone());
        request(HostMessage::Exec {
            id: self.id.clone(),
            process,
        })?;
        let started = self.attach(listener);
        let mut state = self.lock();
        let stream = match started {
            Ok(stream) => stream,
            Err(e) => {
                state.status = Status::Stopped;
                state.exit = Some(Exit::now(stream::LOST));
                self.changed.notify_all();
                return Err(e);
            }
        };
        let reader = stream
            .try_clone()
            .map_err(|e| ContainerError::Protocol(e.into()))?;
        state.conn = Some(stream);
        state.status = Status::Running;
        drop(state);
        let me = self.clone();
        thread::spawn(move || {
            // An exec's connection carries no stats (the container's does).
            let status = stream::copy_output(reader, &me.stdio, &|_| {});
            me.finish(status);
            on_exit(me.wait());
        });
        let me = self.clone();
        stream::forward_stdin(self.stdio.stdin.clone(), &self.stdin_hold, move |m| {
            me.send(m).is_ok()
        });
        Ok(())
    }

    /// The process's connection: the next one on `listener` must name this exec, and the
    /// agent must have started the process.
    fn attach(&self, listener: &UnixListener) -> Result<UnixStream, ContainerError> {
        let mut stream = accept_attach(listener, &self.id)?;
        await_started(&mut stream)?;
        Ok(stream)
    }

    /// Sends a message on the process's connection (stdin, signals).
    pub fn send(&self, message: &HostMessage) -> Result<(), ContainerError> {
        let mut state = self.lock();
        let conn = state
            .conn
            .as_mut()
            .ok_or_else(|| ContainerError::State(format!("exec {} is not running", self.id)))?;
        Ok(write_frame(conn, message)?)
    }

    /// CloseIO: the process's stdin ends once the client has closed its side too.
    pub fn close_stdin(&self) {
        self.stdin_hold.release();
    }

    /// Records the exit (the first one counts) and closes the connection.
    fn finish(&self, status: u32) {
        self.stdin_hold.release();
        let mut state = self.lock();
        state.exit.get_or_insert(Exit::now(status));
        state.status = Status::Stopped;
        state.conn = None;
        self.changed.notify_all();
    }

    /// Delivers `signal` to the process.
    pub fn kill(&self, signal: u32) -> Result<(), ContainerError> {
        let sig = i32::try_from(signal).ok().filter(|&s| valid_signal(s));
        let signal = sig.ok_or(ContainerError::Signal(signal))?;
        match self.lock().status {
            Status::Running => {}
            _ => {
                return Err(ContainerError::State(format!(
                    "exec {} is not running",
                    self.id
                )))
            }
        }
        self.send(&HostMessage::Signal { signal })
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
}

/// The agent's next connection on `listener`, which must name `id` (an exec or a pod's
/// container) in its first frame; reads on it time out after [`EXEC_START_WAIT`].
pub(crate) fn accept_attach(
    listener: &UnixListener,
    id: &str,
) -> Result<UnixStream, ContainerError> {
    let mut stream = accept_within(listener, EXEC_START_WAIT)?;
    stream
        .set_read_timeout(Some(EXEC_START_WAIT))
        .map_err(|e| ContainerError::Protocol(e.into()))?;
    match read_frame::<_, AgentMessage>(&mut stream)? {
        Some(AgentMessage::Attach { id: named }) if named == id => Ok(stream),
        Some(other) => Err(ContainerError::Unexpected(Box::new(other), "attach")),
        None => Err(ContainerError::AgentGone),
    }
}

/// Waits for the agent's `Started` on an attached connection (its `Error` is the error);
/// then reads on it block for good.
pub(crate) fn await_started(stream: &mut UnixStream) -> Result<(), ContainerError> {
    match read_frame::<_, AgentMessage>(stream)? {
        Some(AgentMessage::Started { .. }) => {}
        Some(AgentMessage::Error { message }) => return Err(ContainerError::Agent(message)),
        Some(other) => return Err(ContainerError::Unexpected(Box::new(other), "started")),
        None => return Err(ContainerError::AgentGone),
    }
    stream
        .set_read_timeout(None)
        .map_err(|e| ContainerError::Protocol(e.into()))
}

/// The next connection on `listener` (non-blocking), waiting at most `limit`.
fn accept_within(listener: &UnixListener, limit: Duration) -> Result<UnixStream, ContainerError> {
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(|e| ContainerError::Protocol(e.into()))?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(ContainerError::Protocol(e.into())),
        }
        if start.elapsed() > limit {
            return Err(ContainerError::State(format!(
                "the agent did not connect for the exec or container within {limit:?}"
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener like the VM's agent listener, and an "agent" that connects to it and
    /// sends `frames`, then waits for what the host sends until it closes.
    fn agent(frames: Vec<AgentMessage>) -> (tempfile::TempDir, UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        thread::spawn(move || {
            let mut conn = UnixStream::connect(&path).unwrap();
            for f in &frames {
                write_frame(&mut conn, f).unwrap();
            }
            while let Ok(Some(_)) = read_frame::<_, HostMessage>(&mut conn) {}
        });
        (dir, listener)
    }

    fn exec_process(dir: &std::path::Path) -> Arc<ExecProcess> {
        std::fs::write(dir.join("out"), b"").unwrap();
        let stdio = StdioPaths {
            stdin: String::new(),
            stdout: dir.join("out").display().to_string(),
            stderr: String::new(),
        };
        let spec = ProcessSpec {
            args: vec!["sh".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            rlimits: vec![],
            no_new_privileges: false,
            terminal: false,
            oom_score_adj: None,
        };
        ExecProcess::new("e1", stdio, spec)
    }

    #[test]
    fn an_exec_runs_on_its_own_connection_and_reports_output_and_exit() {
        let (dir, listener) = agent(vec![
            AgentMessage::Attach { id: "e1".into() },
            AgentMessage::Started { pid: 42 },
            AgentMessage::Stdout {
                data: b"from exec\n".to_vec(),
            },
            AgentMessage::Exited { status: 5 },
        ]);
        let process = exec_process(dir.path());
        let requested = Mutex::new(None);
        let (tx, rx) = std::sync::mpsc::channel();
        let on_exit = Box::new(move |exit: Exit| tx.send(exit.status).unwrap());
        let request = |m| {
            *requested.lock().unwrap() = Some(m);
            Ok(())
        };
        process.start(&listener, request, on_exit).unwrap();
        match requested.lock().unwrap().take().unwrap() {
            HostMessage::Exec { id, process } => assert_eq!(
                (id.as_str(), &process.args[..]),
                ("e1", &["sh".to_string()][..])
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(process.wait().status, 5);
        assert_eq!(rx.recv().unwrap(), 5);
        assert_eq!(process.status().0, Status::Stopped);
        let out = std::fs::read(dir.path().join("out")).unwrap();
        assert_eq!(out, b"from exec\n");
        assert!(process.kill(15).is_err(), "a stopped exec takes no signal");
        assert!(process
            .start(&listener, |_| Ok(()), Box::new(|_| {}))
            .is_err());
    }

    #[test]
    fn a_connection_for_another_exec_or_a_failed_start_is_an_error() {
        for frames in [
            vec![AgentMessage::Attach { id: "e2".into() }],
            vec![
                AgentMessage::Attach { id: "e1".into() },
                AgentMessage::Error {
                    message: "sh: not found".into(),
                },
            ],
            vec![AgentMessage::Started { pid: 1 }],
        ] {
            let (dir, listener) = agent(frames.clone());
            let process = exec_process(dir.path());
            let started = process.start(&listener, |_| Ok(()), Box::new(|_| {}));
            assert!(started.is_err(), "{frames:?}");
            assert_eq!(process.status().0, Status::Stopped, "{frames:?}");
            assert_eq!(process.wait().status, stream::LOST);
        }
    }
}
