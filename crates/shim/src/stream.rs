//! The agent's stream while the process runs: its output frames into containerd's stdout
//! and stderr FIFOs, containerd's stdin FIFO into `Stdin` frames.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use agent::protocol::{read_frame, AgentMessage, HostMessage, MAX_CHUNK};

use crate::container::{Container, StdioPaths};

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
/// return, so containerd has all the output before the exit is recorded.
pub fn copy_output(mut reader: UnixStream, stdio: &StdioPaths) -> u32 {
    let mut stdout = open_output(&stdio.stdout);
    let mut stderr = open_output(&stdio.stderr);
    loop {
        match read_frame::<_, AgentMessage>(&mut reader) {
            Ok(Some(AgentMessage::Stdout { data })) => write_out(&mut stdout, &data),
            Ok(Some(AgentMessage::Stderr { data })) => write_out(&mut stderr, &data),
            Ok(Some(AgentMessage::Exited { status })) => return status,
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

/// Forwards containerd's stdin FIFO to the process until it ends, then closes the
/// process's stdin; closes it at once when there is no stdin.
pub fn forward_stdin(container: Arc<Container>) {
    let path = container.stdio.stdin.clone();
    if path.is_empty() {
        let _ = container.send(&HostMessage::CloseStdin);
        return;
    }
    std::thread::spawn(move || {
        if let Ok(mut fifo) = File::open(&path).inspect_err(|e| tracing::warn!("open {path}: {e}"))
        {
            let mut buf = vec![0u8; MAX_CHUNK];
            loop {
                let data = match fifo.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.get(..n).unwrap_or_default().to_vec(),
                };
                if container.send(&HostMessage::Stdin { data }).is_err() {
                    return;
                }
            }
        }
        let _ = container.send(&HostMessage::CloseStdin);
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
        assert_eq!(copy_output(host, &stdio(dir.path())), 3);
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
            assert_eq!(copy_output(host, &stdio(dir.path())), LOST, "{bytes:?}");
        }
    }
}
