//! Saving and loading a vhost-user back-end's own state (the vhost-user specification's
//! "Migrating back-end state", `VHOST_USER_PROTOCOL_F_DEVICE_STATE`): what virtiofsd keeps
//! besides guest memory — the inodes and open files the guest refers to — passes through a
//! pipe while the device is stopped (its rings taken back with GET_VRING_BASE).
//!
//! * Save: SET_DEVICE_STATE_FD (direction save, phase stopped) with the write end of a
//!   pipe; the back-end writes its state and closes its end; the frontend reads to EOF,
//!   then CHECK_DEVICE_STATE tells whether the back-end succeeded.
//! * Load: SET_DEVICE_STATE_FD (direction load) with the read end; the frontend writes the
//!   bytes, closes its end, then CHECK_DEVICE_STATE.
//! * A back-end may answer SET_DEVICE_STATE_FD with a descriptor of its own (a reply
//!   without the "invalid fd" bit 8): the transfer then goes through that one.
//!
//! Everything from the back-end is untrusted: a state is at most [`Limits::max_len`]
//! bytes, and a reply that is not the expected one (an error code, a missing or extra
//! descriptor) fails the transfer. The whole transfer — SET_DEVICE_STATE_FD's reply, the
//! pipe, CHECK_DEVICE_STATE's reply — must end within [`Limits::timeout`]: these two
//! messages are sent and their replies awaited here (poll with the deadline) rather than
//! through the `vhost` crate, which waits for a reply without a bound. A back-end whose
//! reply is late has its connection shut down (a late reply must not be taken for the
//! answer to a later message): the device is unusable after that.

use std::fs::File;
use std::io::{Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostTransferStateDirection, VhostTransferStatePhase};
use vhost::vhost_user::Error as ProtocolError;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::frontend::DeviceConnection;

/// The largest back-end state vessel accepts or sends by default. The state travels
/// base64-encoded (a third larger) in snapshot state files and migration state messages,
/// next to the rest of the VM's state and the other shares' states; both are at most
/// 64 MiB, so one share's largest state fits but several large ones together may not: a
/// snapshot then refuses to write its state file, a migration to send its state (both
/// with an error, the VM left running where it was).
pub const MAX_STATE_LEN: usize = 16 << 20;
/// How long a whole transfer (both messages' replies and the pipe) may take by default.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// Bounds of one state transfer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_len: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_len: MAX_STATE_LEN,
            timeout: TRANSFER_TIMEOUT,
        }
    }
}

/// Errors of a back-end state transfer.
#[derive(Debug, thiserror::Error)]
pub enum BackendStateError {
    #[error(
        "the vhost-user back-end cannot save or load its state (it does not offer \
         VHOST_USER_PROTOCOL_F_DEVICE_STATE)"
    )]
    Unsupported,
    #[error("the back-end's state is larger than the {limit} bytes vessel accepts")]
    TooLarge { limit: usize },
    #[error("a back-end state of {len} bytes is larger than the {limit} bytes vessel sends")]
    LoadTooLarge { len: usize, limit: usize },
    #[error("the back-end did not finish the state transfer within {0:?}")]
    Timeout(Duration),
    #[error("state transfer pipe: {0}")]
    Pipe(#[source] std::io::Error),
    #[error("vhost-user {step} failed: {source}")]
    Message {
        step: &'static str,
        #[source]
        source: vhost::Error,
    },
    #[error("the back-end reports that it could not {0} its state (CHECK_DEVICE_STATE)")]
    Failed(&'static str),
    #[error("vhost-user {step}: the connection failed: {source}")]
    Socket {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl DeviceConnection {
    /// The back-end's state, with its rings stopped: read from the pipe until the back-end
    /// closes it, then confirmed with CHECK_DEVICE_STATE.
    pub fn save_backend_state(&self, limits: Limits) -> Result<Vec<u8>, BackendStateError> {
        let deadline = Deadline::after(limits.timeout);
        let file = self.begin(VhostTransferStateDirection::SAVE, deadline)?;
        let state = read_all(file, limits.max_len, deadline)?;
        self.check("save", deadline)?;
        Ok(state)
    }

    /// Load `state` (from [`save_backend_state`](Self::save_backend_state)) into a
    /// back-end whose rings have not started: written into the pipe, which is then closed,
    /// and confirmed with CHECK_DEVICE_STATE.
    pub fn load_backend_state(
        &self,
        state: &[u8],
        limits: Limits,
    ) -> Result<(), BackendStateError> {
        if state.len() > limits.max_len {
            return Err(BackendStateError::LoadTooLarge {
                len: state.len(),
                limit: limits.max_len,
            });
        }
        let deadline = Deadline::after(limits.timeout);
        let file = self.begin(VhostTransferStateDirection::LOAD, deadline)?;
        write_all(file, state, deadline)?;
        self.check("load", deadline)
    }

    /// SET_DEVICE_STATE_FD with one end of a new pipe; returns the descriptor the
    /// frontend uses: the pipe's other end, or the back-end's own.
    fn begin(
        &self,
        direction: VhostTransferStateDirection,
        deadline: Deadline,
    ) -> Result<File, BackendStateError> {
        if !self.state_transfer() {
            return Err(BackendStateError::Unsupported);
        }
        let (read, write) = pipe()?;
        let (ours, theirs) = match direction {
            VhostTransferStateDirection::SAVE => (read, write),
            VhostTransferStateDirection::LOAD => (write, read),
        };
        let step = "SET_DEVICE_STATE_FD";
        let mut body = [0u8; 8];
        body[..4].copy_from_slice(&(direction as u32).to_le_bytes());
        body[4..].copy_from_slice(&(VhostTransferStatePhase::STOPPED as u32).to_le_bytes());
        let (value, returned) = self.exchange(
            step,
            SET_DEVICE_STATE_FD,
            &body,
            Some(theirs.as_fd()),
            deadline,
        )?;
        drop(theirs);
        let file = match (value, returned) {
            // The back-end uses our pipe.
            (INVALID_FD, None) => File::from(ours),
            // Its own descriptor; our end of the pipe goes.
            (0, Some(file)) => file,
            _ => return Err(refused(step, ProtocolError::BackendInternalError)),
        };
        set_nonblocking(file.as_fd())?;
        Ok(file)
    }

    /// CHECK_DEVICE_STATE: did the back-end's side of the transfer succeed?
    fn check(&self, what: &'static str, deadline: Deadline) -> Result<(), BackendStateError> {
        match self.exchange(
            "CHECK_DEVICE_STATE",
            CHECK_DEVICE_STATE,
            &[],
            None,
            deadline,
        )? {
            (0, None) => Ok(()),
            (_, None) => Err(BackendStateError::Failed(what)),
            (_, Some(_)) => Err(refused("CHECK_DEVICE_STATE", ProtocolError::IncorrectFds)),
        }
    }

    /// Sends `request` with `body` (and `fd`) and returns the back-end's u64 reply and the
    /// descriptor that came with it, before `deadline`. A reply that is late, or not a reply
    /// to `request`, shuts the connection down.
    fn exchange(
        &self,
        step: &'static str,
        request: u32,
        body: &[u8],
        fd: Option<BorrowedFd<'_>>,
        deadline: Deadline,
    ) -> Result<(u64, Option<File>), BackendStateError> {
        let sock = self.as_fd();
        // SAFETY: the descriptor stays the connection's (ManuallyDrop never closes it); the
        // stream is only a way to call sendmsg/recvmsg with descriptors on it.
        let stream = ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(sock.as_raw_fd()) });
        let socket_err = |source| BackendStateError::Socket { step, source };
        let size = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let mut msg = Vec::with_capacity(HEADER_LEN + body.len());
        msg.extend_from_slice(&request.to_le_bytes());
        msg.extend_from_slice(&VERSION.to_le_bytes());
        msg.extend_from_slice(&size.to_le_bytes());
        msg.extend_from_slice(body);
        let fds: Vec<RawFd> = fd.iter().map(AsRawFd::as_raw_fd).collect();
        let sent = stream
            .send_with_fds(&[&msg[..]], &fds)
            .map_err(|e| socket_err(std::io::Error::from_raw_os_error(e.errno())))?;
        if sent != msg.len() {
            return Err(socket_err(std::io::ErrorKind::WriteZero.into()));
        }
        let result = receive_reply(&stream, request, deadline).map_err(|e| match e {
            ReplyError::Timeout => BackendStateError::Timeout(deadline.timeout),
            ReplyError::Io(source) => socket_err(source),
            ReplyError::Protocol(e) => refused(step, e),
        });
        if result.is_err() {
            // SAFETY: shutdown on the connection's descriptor; no memory is passed.
            unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RDWR) };
        }
        result
    }
}

const SET_DEVICE_STATE_FD: u32 = 42;
const CHECK_DEVICE_STATE: u32 = 43;
/// Header flags: protocol version 1.
const VERSION: u32 = 0x1;
/// Header flags: a reply.
const REPLY: u32 = 0x4;
const HEADER_LEN: usize = 12;
/// SET_DEVICE_STATE_FD's reply: no descriptor returned (the back-end uses the frontend's).
const INVALID_FD: u64 = 0x100;

fn refused(step: &'static str, e: ProtocolError) -> BackendStateError {
    BackendStateError::Message {
        step,
        source: vhost::Error::VhostUserProtocol(e),
    }
}

/// When a transfer must have ended.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    fn after(timeout: Duration) -> Self {
        Self {
            at: Instant::now() + timeout,
            timeout,
        }
    }
}

enum ReplyError {
    Timeout,
    Io(std::io::Error),
    Protocol(ProtocolError),
}

/// The u64 reply to `request` (header and body; a descriptor only with its first byte).
fn receive_reply(
    stream: &UnixStream,
    request: u32,
    deadline: Deadline,
) -> Result<(u64, Option<File>), ReplyError> {
    let mut reply = [0u8; HEADER_LEN + 8];
    let mut got = 0;
    let mut file = None;
    while got < reply.len() {
        wait(stream.as_fd(), libc::POLLIN, deadline).map_err(|e| match e {
            BackendStateError::Timeout(_) => ReplyError::Timeout,
            BackendStateError::Pipe(e) => ReplyError::Io(e),
            _ => ReplyError::Protocol(ProtocolError::InvalidMessage),
        })?;
        let mut fds = [-1; 1];
        let mut iov = [libc::iovec {
            iov_base: reply[got..].as_mut_ptr().cast(),
            iov_len: reply.len() - got,
        }];
        // SAFETY: the iovec points into `reply`, which outlives the call; any descriptor
        // received is owned from here (taken into a File just below).
        let read = unsafe { stream.recv_with_fds(&mut iov, &mut fds) };
        let (n, nfds) = match read {
            Ok(r) => r,
            Err(e) if matches!(e.errno(), libc::EAGAIN | libc::EINTR) => continue,
            Err(e) => return Err(ReplyError::Io(std::io::Error::from_raw_os_error(e.errno()))),
        };
        if nfds > 0 {
            // SAFETY: a descriptor the kernel just gave this process, owned by nobody else.
            let received = unsafe { File::from_raw_fd(fds[0]) };
            if got > 0 || file.is_some() {
                return Err(ReplyError::Protocol(ProtocolError::IncorrectFds));
            }
            file = Some(received);
        }
        if n == 0 {
            return Err(ReplyError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        got += n;
    }
    let word = |at: usize| u32::from_le_bytes(reply[at..at + 4].try_into().unwrap_or_default());
    let (code, flags, size) = (word(0), word(4), word(8));
    if code != request || flags & 0x3 != VERSION || flags & REPLY == 0 || size != 8 {
        return Err(ReplyError::Protocol(ProtocolError::InvalidMessage));
    }
    let value = u64::from_le_bytes(reply[HEADER_LEN..].try_into().unwrap_or_default());
    Ok((value, file))
}

/// A pipe (read end, write end), both close-on-exec.
fn pipe() -> Result<(OwnedFd, OwnedFd), BackendStateError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(BackendStateError::Pipe(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// O_NONBLOCK on the frontend's end only (the back-end's end is another open file).
fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), BackendStateError> {
    // SAFETY: F_GETFL on a descriptor the caller keeps open; no memory is passed.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(BackendStateError::Pipe(std::io::Error::last_os_error()));
    }
    // SAFETY: as above, F_SETFL with an integer argument.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if r < 0 {
        return Err(BackendStateError::Pipe(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Wait until `fd` has `events` (or an error or hang-up, which the next read or write
/// reports), at most until `deadline`.
fn wait(fd: BorrowedFd<'_>, events: i16, deadline: Deadline) -> Result<(), BackendStateError> {
    loop {
        let left = deadline.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BackendStateError::Timeout(deadline.timeout));
        }
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r > 0 {
            return Ok(());
        }
        if r < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(BackendStateError::Pipe(err));
            }
        }
    }
}

/// Everything until EOF, at most `max_len` bytes, before `deadline`.
fn read_all(
    mut file: File,
    max_len: usize,
    deadline: Deadline,
) -> Result<Vec<u8>, BackendStateError> {
    let mut state = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        wait(file.as_fd(), libc::POLLIN, deadline)?;
        match file.read(&mut buf) {
            Ok(0) => return Ok(state),
            Ok(n) if state.len() + n > max_len => {
                return Err(BackendStateError::TooLarge { limit: max_len })
            }
            Ok(n) => state.extend_from_slice(&buf[..n]),
            Err(e) if is_retry(&e) => {}
            Err(e) => return Err(BackendStateError::Pipe(e)),
        }
    }
}

/// All of `state`, before `deadline`; the descriptor is closed at the end (EOF for the
/// back-end).
fn write_all(
    mut file: File,
    mut state: &[u8],
    deadline: Deadline,
) -> Result<(), BackendStateError> {
    while !state.is_empty() {
        wait(file.as_fd(), libc::POLLOUT, deadline)?;
        match file.write(state) {
            Ok(0) => {
                return Err(BackendStateError::Pipe(
                    std::io::ErrorKind::WriteZero.into(),
                ))
            }
            Ok(n) => state = &state[n..],
            Err(e) if is_retry(&e) => {}
            Err(e) => return Err(BackendStateError::Pipe(e)),
        }
    }
    Ok(())
}

fn is_retry(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}
