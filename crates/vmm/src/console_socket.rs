//! The serial console of a background VM: output is appended to a log file (rotated at
//! [`CONSOLE_LOG_LIMIT`]) and copied to the client attached to a unix socket
//! (`vessel console`), whose input goes to the guest.
//! One client at a time; a newer client replaces the older one.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::console_log::{ConsoleLog, CONSOLE_LOG_LIMIT};

/// Where serial output goes: the log, and the attached client if any.
pub struct ConsoleOutput {
    log: ConsoleLog,
    client: Arc<Mutex<Option<UnixStream>>>,
}

impl Write for ConsoleOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
        // A client that cannot keep up (or left) is dropped; the log keeps everything.
        if let Some(c) = client.as_mut() {
            if c.write_all(buf).is_err() {
                *client = None;
            }
        }
        self.log.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.log.flush()
    }
}

/// The listening socket and the shared slot of the attached client.
pub struct ConsoleSocket {
    pub listener: UnixListener,
    client: Arc<Mutex<Option<UnixStream>>>,
    reader: Option<UnixStream>,
}

impl ConsoleSocket {
    /// Bind `socket` (replacing a stale file; owner-only, 0600: a client types into the
    /// guest's console) and open `log` for appending.
    pub fn bind(socket: &Path, log: &Path) -> std::io::Result<(Self, ConsoleOutput)> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let log = ConsoleLog::open(log, CONSOLE_LOG_LIMIT)?;
        let client = Arc::new(Mutex::new(None));
        Ok((
            Self {
                listener,
                client: client.clone(),
                reader: None,
            },
            ConsoleOutput { log, client },
        ))
    }

    /// Accept a pending client; returns its read side for the event loop to poll.
    pub fn accept(&mut self) -> Option<&UnixStream> {
        let (stream, _) = self.listener.accept().ok()?;
        // Writes to a slow client time out rather than stalling the vCPU writing output.
        stream
            .set_write_timeout(Some(std::time::Duration::from_millis(200)))
            .ok()?;
        let reader = stream.try_clone().ok()?;
        reader.set_nonblocking(true).ok()?;
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(stream);
        self.reader = Some(reader);
        self.reader.as_ref()
    }

    /// Read input from the attached client; `None` when it has gone (or none is attached).
    pub fn read_input(&mut self, buf: &mut [u8]) -> Option<usize> {
        let r = self.reader.as_mut()?;
        match r.read(buf) {
            Ok(0) => {
                self.detach();
                None
            }
            Ok(n) => Some(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(0),
            Err(_) => {
                self.detach();
                None
            }
        }
    }

    /// fd of the attached client's read side.
    pub fn reader_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.reader.as_ref().map(|r| r.as_raw_fd())
    }

    pub fn detach(&mut self) {
        self.reader = None;
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn console_socket_is_owner_only_after_listen() {
        let dir = std::env::temp_dir().join(format!("vessel-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("console.sock");
        let _console = ConsoleSocket::bind(&socket, &dir.join("serial.log")).unwrap();
        let mode = std::fs::metadata(&socket).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
