//! The agent's stream while the process runs: its output frames into containerd's stdout
//! and stderr FIFOs, containerd's stdin FIFO into `Stdin` frames.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use agent::protocol::{read_frame, AgentMessage, HostMessage, MAX_CHUNK};

use crate::answer::Answer;

use crate::container::StdioPaths;

/// The exit status reported when the VM ends without the agent reporting one.
pub const LOST: u32 = 255;

/// Opens one of containerd's output FIFOs without waiting for its reader (read-write open
/// of a FIFO never blocks); `None` when the stream is not wanted or cannot be opened.
fn open_output(path: &str) -> Option<File> {
    if path.is_empty() {
        return None;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .inspect_err(|e| tracing::warn!("open {path}: {e}"))
        .ok()
}

/// Copies output frames to the FIFOs until the agent reports the exit; returns the exit
/// status ([`LOST`] when the stream ends first: the VM died). The FIFOs are closed on
/// return, so containerd has all the output before the exit is recorded. The agent's
/// answers to questions (Stats, Update, Pause, Resume) go to `on_answer`.
pub fn copy_output(mut reader: UnixStream, stdio: &StdioPaths, on_answer: &dyn Fn(Answer)) -> u32 {
    let mut stdout = open_output(&stdio.stdout);
    let mut stderr = open_output(&stdio.stderr);
    loop {
        match read_frame::<_, AgentMessage>(&mut reader) {
            Ok(Some(AgentMessage::Stdout { data })) => write_out(&mut stdout, &data),
            Ok(Some(AgentMessage::Stderr { data })) => write_out(&mut stderr, &data),
            Ok(Some(AgentMessage::Exited { status })) => return status,
            Ok(Some(AgentMessage::Stats { stats })) => on_answer(Answer::Stats(*stats)),
            Ok(Some(AgentMessage::Done { error })) => on_answer(Answer::Done(error)),
            Ok(Some(other)) => tracing::warn!("the agent sent {other:?} while the process ran"),
            Ok(None) => {
                tracing::warn!("the VM's agent went away before reporting an exit");
                return LOST;
            }
            Err(e) => {
                tracing::warn!("the VM's agent: {e}");
                return LOST;
            }
        }
    }
}

fn write_out(out: &mut Option<File>, data: &[u8]) {
    if let Some(f) = out {
        if f.write_all(data).is_err() {
            *out = None;
        }
    }
}

/// The shim's own writing handle on containerd's stdin FIFO (runc's shim keeps one too):
/// the FIFO reaches its end only once the client has closed its side *and* containerd has
/// called CloseIO ([`StdinHold::release`]), so everything the client wrote is forwarded
/// before the process's stdin closes, however the two race.
#[derive(Debug, Default)]
pub struct StdinHold(Mutex<Option<File>>);

impl StdinHold {
    fn hold(&self, f: File) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// Lets the FIFO end (CloseIO, or the process is gone).
    pub fn release(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Forwards containerd's stdin FIFO at `path` to a process through `send` until the FIFO
/// ends (see [`StdinHold`]), then closes the process's stdin; closes it at once when there
/// is no stdin. `send` returns whether the process still takes input.
pub fn forward_stdin(
    path: String,
    hold: &StdinHold,
    send: impl Fn(&HostMessage) -> bool + Send + 'static,
) {
    if path.is_empty() {
        send(&HostMessage::CloseStdin);
        return;
    }
    // A read-write open of a FIFO never blocks, and with it held the read-only open
    // returns at once: both happen before CloseIO can release the hold.
    match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => hold.hold(f),
        Err(e) => {
            tracing::warn!("open {path}: {e}");
            send(&HostMessage::CloseStdin);
            return;
        }
    }
    let fifo = File::open(&path).inspect_err(|e| tracing::warn!("open {path}: {e}"));
    std::thread::spawn(move || {
        if let Ok(mut fifo) = fifo {
            let mut buf = vec![0u8; MAX_CHUNK];
            loop {
                let data = match fifo.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.get(..n).unwrap_or_default().to_vec(),
                };
                if !send(&HostMessage::Stdin { data }) {
                    return;
                }
            }
        }
        send(&HostMessage::CloseStdin);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent::protocol::write_frame;

    fn stdio(dir: &std::path::Path) -> StdioPaths {
        for f in ["out", "err"] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        StdioPaths {
            stdin: String::new(),
            stdout: dir.join("out").display().to_string(),
            stderr: dir.join("err").display().to_string(),
        }
    }

    #[test]
    fn output_goes_to_its_stream_and_the_exit_status_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let (mut guest, host) = UnixStream::pair().unwrap();
        for m in [
            AgentMessage::Stdout {
                data: b"hi\n".to_vec(),
            },
            AgentMessage::Stderr {
                data: b"oops\n".to_vec(),
            },
            AgentMessage::Started { pid: 9 },
            AgentMessage::Exited { status: 3 },
        ] {
            write_frame(&mut guest, &m).unwrap();
        }
        assert_eq!(copy_output(host, &stdio(dir.path()), &|_| {}), 3);
        assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), b"hi\n");
        assert_eq!(std::fs::read(dir.path().join("err")).unwrap(), b"oops\n");
    }

    #[test]
    fn a_hostile_or_vanished_guest_ends_the_task_with_the_lost_status() {
        let dir = tempfile::tempdir().unwrap();
        let huge = ((agent::protocol::MAX_FRAME + 1) as u32)
            .to_be_bytes()
            .to_vec();
        let mut garbage = 9u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(b"not json!");
        let mut unknown = Vec::new();
        let body = br#"{"type":"exited","status":0,"evil":true}"#;
        unknown.extend_from_slice(&(body.len() as u32).to_be_bytes());
        unknown.extend_from_slice(body);
        for bytes in [huge, garbage, unknown, vec![0, 0], Vec::new()] {
            let (mut guest, host) = UnixStream::pair().unwrap();
            guest.write_all(&bytes).unwrap();
            drop(guest);
            assert_eq!(
                copy_output(host, &stdio(dir.path()), &|_| {}),
                LOST,
                "{bytes:?}"
            );
        }
    }

    /// A fresh FIFO forwarded with a hold: (its directory, its path, the hold, the frames
    /// `send` gets, in order).
    fn forwarding() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        StdinHold,
        std::sync::mpsc::Receiver<HostMessage>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stdin");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let hold = StdinHold::default();
        let (tx, rx) = std::sync::mpsc::channel();
        forward_stdin(fifo.display().to_string(), &hold, move |m| {
            tx.send(m.clone()).is_ok()
        });
        (dir, fifo, hold, rx)
    }

    fn next(rx: &std::sync::mpsc::Receiver<HostMessage>) -> HostMessage {
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn stdin_written_before_close_io_reaches_the_process_before_its_end() {
        // ctr writes, calls CloseIO, then closes its side: CloseIO must not overtake data
        // still in the FIFO.
        let (_dir, fifo, hold, rx) = forwarding();
        let mut w = OpenOptions::new().write(true).open(&fifo).unwrap();
        w.write_all(b"input\n").unwrap();
        hold.release();
        drop(w);
        let mut data = Vec::new();
        loop {
            match next(&rx) {
                HostMessage::Stdin { data: d } => data.extend(d),
                HostMessage::CloseStdin => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(data, b"input\n");
    }

    #[test]
    fn stdin_ends_only_once_the_client_closed_and_close_io_came() {
        let (_dir, fifo, hold, rx) = forwarding();
        drop(OpenOptions::new().write(true).open(&fifo).unwrap());
        let quiet = rx.recv_timeout(std::time::Duration::from_millis(300));
        assert!(quiet.is_err(), "{quiet:?}");
        hold.release();
        assert_eq!(next(&rx), HostMessage::CloseStdin);
    }

    #[test]
    fn without_a_stdin_the_process_s_stdin_closes_at_once() {
        let (tx, rx) = std::sync::mpsc::channel();
        forward_stdin(String::new(), &StdinHold::default(), move |m| {
            tx.send(m.clone()).is_ok()
        });
        assert_eq!(next(&rx), HostMessage::CloseStdin);
    }
}
