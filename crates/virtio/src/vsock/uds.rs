//! The host's Unix sockets of a vsock device: the listener at `UDS_PATH` (and what
//! happens to a file already there), non-blocking connections to `UDS_PATH_<port>`, and
//! the `CONNECT <port>\n` line a host client sends first.

use std::ffi::OsString;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UdsError {
    #[error("{0}: exists and is not a Unix socket")]
    NotASocket(PathBuf),
    #[error("{0}: another process is listening on this socket")]
    InUse(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Longest `CONNECT <port>\n` line read from a host client (Firecracker's limit).
pub const MAX_CONNECT_LINE: usize = 32;

/// Bind the non-blocking listener at `path`. A socket file nobody listens on any more (a
/// VMM that died) is replaced; a live socket or any other file is refused.
pub fn bind_listener(path: &Path) -> Result<UnixListener, UdsError> {
    let io = |source| UdsError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(UdsError::NotASocket(path.to_path_buf()))
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => return Err(UdsError::InUse(path.to_path_buf())),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(io)?
            }
            Err(e) => return Err(io(e)),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    Ok(listener)
}

/// `UDS_PATH_<port>`, where guest connections to host port `port` go.
pub fn port_path(uds: &Path, port: u32) -> PathBuf {
    let mut s = OsString::from(uds.as_os_str());
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// Connect to `path` without blocking: a Unix stream connect either completes at once or
/// fails (EAGAIN when the listener's backlog is full), so a guest cannot stall the I/O
/// thread on a busy host listener.
pub fn connect(path: &Path) -> std::io::Result<UnixStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&SockAddr::unix(path)?)?;
    Ok(UnixStream::from(std::os::fd::OwnedFd::from(socket)))
}

/// Parse `CONNECT <port>` (the keyword in any case, as Firecracker accepts it), without the
/// newline.
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_ascii_whitespace();
    let keyword = words.next()?;
    let port = words.next()?;
    if !keyword.eq_ignore_ascii_case("connect") || words.next().is_some() {
        return None;
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// Progress of a host client's `CONNECT` line.
#[derive(Debug, PartialEq, Eq)]
pub enum LineState {
    /// No full line yet: wait for more bytes.
    Pending,
    /// The client asked for guest port `port`.
    Port(u32),
    /// Malformed, too long, or the client went away: close it.
    Invalid,
}

/// Collects the `CONNECT` line byte by byte, so nothing the client sends after it (its
/// first data for the guest) is consumed here.
#[derive(Default)]
pub struct ConnectLine {
    buf: Vec<u8>,
}

impl ConnectLine {
    pub fn read_from(&mut self, stream: &mut impl Read) -> LineState {
        let mut byte = [0u8; 1];
        loop {
            match stream.read(&mut byte) {
                Ok(0) => return LineState::Invalid,
                Ok(_) if byte[0] == b'\n' => {
                    return parse_connect(&self.buf).map_or(LineState::Invalid, LineState::Port)
                }
                Ok(_) => {
                    self.buf.push(byte[0]);
                    if self.buf.len() >= MAX_CONNECT_LINE {
                        return LineState::Invalid;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return LineState::Pending,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return LineState::Invalid,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect(b"connect 4294967295"), Some(u32::MAX));
        assert_eq!(parse_connect(b"CONNECT 52\r"), Some(52));
        for bad in [
            &b"CONNECT"[..],
            b"CONNECT -1",
            b"CONNECT +5",
            b"CONNECT 4294967296",
            b"CONNECT 5 6",
            b"LISTEN 5",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(parse_connect(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn line_reader_stops_at_the_newline_and_caps_the_length() {
        let mut input: &[u8] = b"CONNECT 7\nrest";
        let mut line = ConnectLine::default();
        assert_eq!(line.read_from(&mut input), LineState::Port(7));
        assert_eq!(input, b"rest");
        let long = [b'0'; 40];
        let mut line = ConnectLine::default();
        assert_eq!(line.read_from(&mut &long[..]), LineState::Invalid);
        let mut line = ConnectLine::default();
        assert_eq!(line.read_from(&mut &b"CONN"[..]), LineState::Invalid, "EOF");
    }

    #[test]
    fn stale_sockets_are_replaced_live_ones_and_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let live = bind_listener(&path).unwrap();
        assert!(matches!(bind_listener(&path), Err(UdsError::InUse(_))));
        drop(live); // the file stays behind, nobody listens: stale
        let _again = bind_listener(&path).unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(bind_listener(&file), Err(UdsError::NotASocket(_))));
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
        assert_eq!(port_path(&path, 52), dir.path().join("v.sock_52"));
        assert!(connect(&port_path(&path, 52)).is_err());
    }
}
