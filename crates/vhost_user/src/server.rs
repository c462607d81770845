//! The listening socket and the connection loop: one frontend at a time; when it goes
//! away (or breaks the protocol) its session is dropped and the next one is accepted.
//! Both loops wait for their socket (or the stop fd) to be readable through an
//! `event-manager` subscriber, as every polling loop of vessel does.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{
    EventManager, EventOps, Events, MutEventSubscriber, SubscriberId, SubscriberOps,
};
use vhost::vhost_user::{BackendReqHandler, Error as VhostError};
use virtio::VirtioDevice;
use vmm_sys_util::epoll::EventSet;

use crate::handler::{lock, RequestHandler};
use crate::session::{Core, SessionError};
use crate::worker::Worker;

/// A message whose body does not follow its header, or a reply the frontend does not read,
/// within this time ends the connection (a frontend cannot stall the backend).
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket { path: std::path::PathBuf },
    #[error("{path}: another process is listening there")]
    InUse { path: std::path::PathBuf },
    #[error("{path}: {source}")]
    Bind {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("accepting a connection: {0}")]
    Accept(#[source] io::Error),
    #[error("poll: {0}")]
    Poll(#[source] io::Error),
    #[error("starting a session: {0}")]
    Session(#[from] SessionError),
    #[error("starting the worker thread: {0}")]
    Worker(#[source] io::Error),
}

/// How a connection ended.
#[derive(Debug)]
pub enum ConnectionEnd {
    /// The frontend closed the socket.
    Disconnected,
    /// The stop fd became readable.
    Stopped,
    /// The frontend broke the protocol or the socket failed; the connection was closed.
    Failed(VhostError),
}

/// Listen on `path`, replacing a stale socket left there (but no other kind of file, nor
/// a socket somebody still listens on). The socket is made owner-only (0600): whoever
/// connects drives the device and maps guest memory.
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServerError::NotASocket { path: path.into() });
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse { path: path.into() });
        }
        std::fs::remove_file(path).map_err(|source| ServerError::Bind {
            path: path.into(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| ServerError::Bind {
        path: path.into(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ServerError::Bind {
            path: path.into(),
            source,
        }
    })?;
    Ok(listener)
}

/// Which fd of a [`ReadyWait`] is ready (its event's data).
const WATCHED: u32 = 0;
const STOP: u32 = 1;

/// The subscriber of a [`ReadyWait`]: notes whether `stop` fired.
struct ReadyWatch {
    fd: RawFd,
    stop: RawFd,
    stopped: bool,
    /// The fds `init` registers, and the first that failed.
    registrations: eventloop::Registrations,
}

impl eventloop::Registered for ReadyWatch {
    fn registrations(&mut self) -> &mut eventloop::Registrations {
        &mut self.registrations
    }
}

impl MutEventSubscriber for ReadyWatch {
    fn init(&mut self, ops: &mut EventOps) {
        for (fd, data) in [(self.fd, WATCHED), (self.stop, STOP)] {
            self.registrations.add(ops, fd, data, EventSet::IN);
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.data() == STOP {
            self.stopped = true;
        }
    }
}

fn poll_error(e: event_manager::Error) -> ServerError {
    ServerError::Poll(eventloop::io_error(e))
}

/// Waits for a listener or a connection, or `stop`, to be readable: an `event-manager`
/// loop of one subscriber watching both fds.
struct ReadyWait {
    manager: EventManager<ReadyWatch>,
    id: SubscriberId,
}

impl ReadyWait {
    fn new(fd: RawFd, stop: BorrowedFd) -> Result<Self, ServerError> {
        let (manager, id) = eventloop::start(ReadyWatch {
            fd,
            stop: stop.as_raw_fd(),
            stopped: false,
            registrations: Default::default(),
        })
        .map_err(ServerError::Poll)?;
        Ok(Self { manager, id })
    }

    /// Wait until the fd or `stop` is readable (or hung up); returns whether `stop` is.
    fn wait(&mut self) -> Result<bool, ServerError> {
        self.manager
            .subscriber_mut(self.id)
            .map_err(poll_error)?
            .stopped = false;
        // Nothing is dispatched when a signal interrupts the wait: wait again.
        while self.manager.run().map_err(poll_error)? == 0 {}
        Ok(self
            .manager
            .subscriber_mut(self.id)
            .map_err(poll_error)?
            .stopped)
    }
}

/// Whether `e` just means the frontend went away.
fn is_disconnect(e: &VhostError) -> bool {
    matches!(
        e,
        VhostError::Disconnected | VhostError::PartialMessage | VhostError::SocketBroken(_)
    )
}

/// A vhost-user backend serving one virtio device model.
pub struct Backend {
    core: Arc<Mutex<Core>>,
}

/// One frontend's connection, without a worker thread: requests are handled and queues
/// run when the caller says so (what [`Backend::serve_connection`] does on threads; tests
/// and fuzzing drive it directly). Dropping it ends the session.
pub struct Connection {
    requests: BackendReqHandler<Mutex<RequestHandler>>,
    core: Arc<Mutex<Core>>,
}

/// Request code of SET_VRING_ENABLE and the size of its body.
const SET_VRING_ENABLE: u32 = 18;
const VRING_STATE_LEN: usize = 8;

/// Look at the next message without consuming it: `(index, num)` if it is a complete
/// SET_VRING_ENABLE.
fn peek_vring_enable(fd: RawFd) -> Option<(u32, u32)> {
    let mut raw = [0u8; 12 + VRING_STATE_LEN];
    // SAFETY: `raw` is a writable buffer of the given length; MSG_PEEK leaves the data
    // (and any fds) queued.
    let n = unsafe {
        libc::recv(
            fd,
            raw.as_mut_ptr().cast(),
            raw.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    let word = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
    let complete = usize::try_from(n).is_ok_and(|n| n == raw.len());
    (complete && word(0) == SET_VRING_ENABLE && word(8) as usize == VRING_STATE_LEN)
        .then(|| (word(12), word(16)))
}

impl Connection {
    /// Read and answer one request.
    ///
    /// QEMU's vhost-user-net sends SET_VRING_ENABLE before SET_FEATURES acknowledged
    /// VHOST_USER_F_PROTOCOL_FEATURES (it only checks that the backend offers it), and
    /// restores nothing later if the ring was already enabled; the vhost crate refuses
    /// such a message, so the ring state it carries is applied here (as DPDK does).
    pub fn handle_request(&mut self) -> Result<(), VhostError> {
        let early_enable = peek_vring_enable(self.requests.as_raw_fd());
        let result = self.requests.handle_request();
        if let (Err(VhostError::InactiveFeature(_)), Some((index, num))) = (&result, early_enable) {
            if num <= 1 {
                let _ = lock(&self.core).set_vring_enable(index, num == 1);
            }
        }
        result
    }

    /// Run every started ring once, as a kick of each would.
    pub fn run_queues(&self) {
        lock(&self.core).run_all();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        lock(&self.core).close_session();
    }
}

impl Backend {
    /// A backend for `device`. `queue_num` is what GET_QUEUE_NUM answers (queues for
    /// virtio-blk, queue pairs for virtio-net); `backend_fd` (a NIC backend's) is polled
    /// edge-triggered and runs every queue when ready.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        queue_num: u64,
        backend_fd: Option<RawFd>,
    ) -> Result<Self, SessionError> {
        Ok(Self {
            core: Arc::new(Mutex::new(Core::new(device, queue_num, backend_fd)?)),
        })
    }

    /// Start a session on `stream`, replacing any previous one.
    pub fn connect(&self, stream: UnixStream) -> Result<Connection, ServerError> {
        lock(&self.core).open_session()?;
        let handler = Arc::new(Mutex::new(RequestHandler::new(self.core.clone())));
        Ok(Connection {
            requests: BackendReqHandler::from_stream(stream, handler),
            core: self.core.clone(),
        })
    }

    /// Serve the frontend on `stream` until it disconnects, fails or `stop` is readable.
    pub fn serve_connection(
        &self,
        stream: UnixStream,
        stop: BorrowedFd,
    ) -> Result<ConnectionEnd, ServerError> {
        let _ = stream.set_read_timeout(Some(MESSAGE_TIMEOUT));
        // Nor by leaving our replies unread.
        let _ = stream.set_write_timeout(Some(MESSAGE_TIMEOUT));
        let fd = stream.as_raw_fd();
        let mut ready = ReadyWait::new(fd, stop)?;
        let mut connection = self.connect(stream)?;
        let worker = Worker::spawn(self.core.clone()).map_err(ServerError::Worker)?;
        let end = loop {
            match ready.wait() {
                Ok(true) => break Ok(ConnectionEnd::Stopped),
                Ok(false) => {}
                Err(e) => break Err(e),
            }
            match connection.handle_request() {
                Ok(()) => {}
                Err(e) if is_disconnect(&e) => break Ok(ConnectionEnd::Disconnected),
                Err(VhostError::ReqHandlerError(e)) => {
                    tracing::warn!("vhost-user: request refused: {e}");
                }
                // SET_VRING_ENABLE before SET_FEATURES (QEMU's vhost-user-net, without
                // asking for a reply): applied by Connection::handle_request.
                Err(VhostError::InactiveFeature(_)) => {}
                Err(e) => break Ok(ConnectionEnd::Failed(e)),
            }
        };
        // The worker goes first: it must not run queues over memory being unmapped.
        drop(worker);
        drop(connection);
        end
    }

    /// Accept and serve frontends one at a time until `stop` is readable.
    pub fn serve(&self, listener: &UnixListener, stop: BorrowedFd) -> Result<(), ServerError> {
        let mut ready = ReadyWait::new(listener.as_raw_fd(), stop)?;
        loop {
            if ready.wait()? {
                return Ok(());
            }
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ServerError::Accept(e)),
            };
            match self.serve_connection(stream, stop)? {
                ConnectionEnd::Stopped => return Ok(()),
                ConnectionEnd::Disconnected => {
                    tracing::info!("vhost-user: frontend disconnected; waiting for the next")
                }
                ConnectionEnd::Failed(e) => {
                    tracing::warn!("vhost-user: connection closed: {e}; waiting for the next")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn socket_is_owner_only_after_listen() {
        let dir = std::env::temp_dir().join(format!("vhost-user-bind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
