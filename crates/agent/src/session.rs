//! One container's life over the host's stream: `Ready`, the `Run` request, the process's
//! output as frames, signals and stdin from the host, `Exited`, then the host's `Shutdown`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ChildStdin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::mounts::{self, MountError};
use crate::process::{self, ProcessError};
use crate::protocol::{
    read_frame, valid_signal, write_frame, AgentMessage, ContainerSpec, HostMessage, ProtocolError,
    MAX_CHUNK,
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
}

type Writer = Arc<Mutex<File>>;

fn send(writer: &Writer, message: &AgentMessage) -> Result<(), ProtocolError> {
    let mut w = writer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    write_frame(&mut *w, message)
}

/// Serves the host on `stream`: runs one process in `root` and returns its exit status.
pub fn serve(stream: File, root: &Path, kernel: String) -> Result<u32, SessionError> {
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
    let started = start(root, &container);
    let mut child = match started {
        Ok(child) => child,
        Err(e) => {
            let message = e.to_string();
            send(&writer, &AgentMessage::Error { message })?;
            return Err(e);
        }
    };
    let pid = child.id();
    send(&writer, &AgentMessage::Started { pid })?;
    let pumps = [
        child
            .stdout
            .take()
            .map(|out| pump(out, writer.clone(), Stream::Out)),
        child
            .stderr
            .take()
            .map(|err| pump(err, writer.clone(), Stream::Err)),
    ];
    let (shutdown_tx, shutdown_rx) = mpsc::channel();
    let stdin = child.stdin.take();
    thread::spawn(move || control(reader, pid, stdin, shutdown_tx));
    let status = waitpid(Pid::from_raw(pid as i32), None).map_err(SessionError::Wait)?;
    let status = process::exit_status(status).unwrap_or(255);
    for p in pumps.into_iter().flatten() {
        let _ = p.join();
    }
    send(&writer, &AgentMessage::Exited { status })?;
    let _ = shutdown_rx.recv_timeout(SHUTDOWN_WAIT);
    Ok(status)
}

/// Validates the container, prepares its root and starts its process.
fn start(root: &Path, container: &ContainerSpec) -> Result<std::process::Child, SessionError> {
    container.validate()?;
    mounts::prepare(root, container)?;
    Ok(process::spawn(root, &container.process)?)
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

/// Carries out the host's requests while the process runs; says when the host is done.
fn control(mut reader: File, pid: u32, mut stdin: Option<ChildStdin>, done: mpsc::Sender<()>) {
    loop {
        match read_frame::<_, HostMessage>(&mut reader) {
            Ok(Some(HostMessage::Signal { signal })) if valid_signal(signal) => {
                if let Ok(sig) = Signal::try_from(signal) {
                    let _ = kill(Pid::from_raw(pid as i32), sig);
                }
            }
            Ok(Some(HostMessage::Stdin { data })) => {
                if let Some(w) = stdin.as_mut() {
                    if w.write_all(&data).is_err() {
                        stdin = None;
                    }
                }
            }
            Ok(Some(HostMessage::CloseStdin)) => stdin = None,
            // A bad signal number or a second Run: ignored, the process keeps running.
            Ok(Some(HostMessage::Signal { .. } | HostMessage::Run { .. })) => {}
            Ok(Some(HostMessage::Shutdown)) | Ok(None) | Err(_) => {
                let _ = done.send(());
                return;
            }
        }
    }
}
