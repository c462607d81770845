//! Where a migration goes: `unix:PATH` (a unix stream socket) or `tcp:HOST:PORT`, with the
//! receiver listening and the sender connecting. `tcp:` is neither encrypted nor
//! authenticated: it is for trusted networks (docs/migration.md).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use super::MigrationError;

/// A migration endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationUrl {
    Unix(PathBuf),
    /// `HOST:PORT`, as `std::net` resolves it.
    Tcp(String),
}

impl std::str::FromStr for MigrationUrl {
    type Err = MigrationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MigrationError::Url(s.to_string());
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() || path.contains('\0') {
                return Err(bad());
            }
            return Ok(MigrationUrl::Unix(path.into()));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad());
            }
            return Ok(MigrationUrl::Tcp(addr.to_string()));
        }
        Err(bad())
    }
}

impl std::fmt::Display for MigrationUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrationUrl::Unix(p) => write!(f, "unix:{}", p.display()),
            MigrationUrl::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

fn socket_err(what: &'static str, url: &MigrationUrl) -> impl Fn(std::io::Error) -> MigrationError {
    let url = url.to_string();
    move |source| MigrationError::Socket {
        what,
        url: url.clone(),
        source,
    }
}

/// A connected migration stream.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    /// Connects to the receiver at `url`.
    pub fn connect(url: &MigrationUrl) -> Result<Self, MigrationError> {
        let err = socket_err("cannot connect to", url);
        Ok(match url {
            MigrationUrl::Unix(path) => Stream::Unix(UnixStream::connect(path).map_err(err)?),
            MigrationUrl::Tcp(addr) => {
                let stream = TcpStream::connect(addr.as_str()).map_err(&err)?;
                stream.set_nodelay(true).map_err(err)?;
                Stream::Tcp(stream)
            }
        })
    }

    /// How long a read may wait (`None`: for ever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(timeout),
            Stream::Tcp(s) => s.set_read_timeout(timeout),
        }
    }

    /// Ends both directions now (the other end's reads and writes fail).
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    /// A second handle on the same connection (to shut it down from another thread).
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The receiver's listening socket.
pub enum Listener {
    /// The socket file is removed when the listener is dropped.
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    /// Listens at `url`. A unix socket path must not exist yet (nothing is replaced).
    pub fn bind(url: &MigrationUrl) -> Result<Self, MigrationError> {
        let err = socket_err("cannot listen on", url);
        Ok(match url {
            MigrationUrl::Unix(path) => {
                Listener::Unix(UnixListener::bind(path).map_err(err)?, path.clone())
            }
            MigrationUrl::Tcp(addr) => {
                Listener::Tcp(TcpListener::bind(addr.as_str()).map_err(err)?)
            }
        })
    }

    /// Waits for the sender and returns its stream.
    pub fn accept(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Listener::Unix(l, _) => Stream::Unix(l.accept()?.0),
            Listener::Tcp(l) => {
                let stream = l.accept()?.0;
                stream.set_nodelay(true)?;
                Stream::Tcp(stream)
            }
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_are_refused() {
        assert_eq!(
            "unix:/tmp/m.sock".parse::<MigrationUrl>().unwrap(),
            MigrationUrl::Unix("/tmp/m.sock".into())
        );
        assert_eq!(
            "tcp:127.0.0.1:4444".parse::<MigrationUrl>().unwrap(),
            MigrationUrl::Tcp("127.0.0.1:4444".into())
        );
        assert_eq!(
            "tcp:[::1]:4444"
                .parse::<MigrationUrl>()
                .unwrap()
                .to_string(),
            "tcp:[::1]:4444"
        );
        for bad in [
            "",
            "unix:",
            "/tmp/x",
            "tcp:host",
            "tcp::80",
            "tcp:h:99999",
            "ssh:h",
        ] {
            assert!(bad.parse::<MigrationUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_unix_listener_takes_one_connection_and_removes_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let url = MigrationUrl::Unix(dir.path().join("m.sock"));
        let listener = Listener::bind(&url).unwrap();
        assert!(
            Listener::bind(&url).is_err(),
            "an existing socket is not replaced"
        );
        let mut client = Stream::connect(&url).unwrap();
        let mut server = listener.accept().unwrap();
        client.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        drop(listener);
        assert!(!dir.path().join("m.sock").exists());
    }
}
