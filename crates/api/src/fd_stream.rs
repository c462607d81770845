//! An API connection that also takes file descriptors (SCM_RIGHTS): a client adding a
//! run-time port forward passes the socket it bound with the request's bytes. The last
//! descriptor received waits in the connection's slot for the request it came with; any
//! other is closed.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;

/// Descriptors taken in one `recvmsg`; more are closed by the kernel (MSG_CTRUNC).
const MAX_FDS: usize = 4;

/// The descriptor a connection received last, until a request takes it.
pub(crate) type FdSlot = Arc<Mutex<Option<OwnedFd>>>;

pub(crate) struct FdStream {
    inner: UnixStream,
    slot: FdSlot,
}

impl FdStream {
    pub(crate) fn new(inner: UnixStream) -> (Self, FdSlot) {
        let slot = FdSlot::default();
        (
            Self {
                inner,
                slot: slot.clone(),
            },
            slot,
        )
    }
}

/// Takes the descriptor waiting in `slot`.
pub(crate) fn take(slot: &FdSlot) -> Option<OwnedFd> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// One `recvmsg` into `buf`; descriptors that came with the bytes go to `slot`.
fn recv_with_fds(fd: RawFd, buf: &mut [u8], slot: &FdSlot) -> io::Result<usize> {
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    let control_len = std::mem::size_of_val(&control);
    // SAFETY: CMSG_SPACE only computes a size.
    let needed = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) };
    debug_assert!(needed as usize <= control_len);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; its pointers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control_len.min(needed as usize);
    // SAFETY: `msg` points at a live buffer and control area for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: walks the control messages the kernel wrote within msg_controllen.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is a header inside the control buffer (CMSG_FIRSTHDR/NXTHDR).
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) only computes a size.
            let data_len = header.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
            let count = data_len / std::mem::size_of::<RawFd>();
            // SAFETY: the data follows the header within the buffer.
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: `i` < count, inside the message's data; unaligned read.
                let raw = unsafe { data.add(i).read_unaligned() };
                // SAFETY: the kernel gave us this new descriptor; nobody else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                // The newest replaces (and closes) an older one.
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(owned);
            }
        }
        // SAFETY: steps within the control buffer as the kernel laid it out.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(n)
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.inner.poll_read_ready(cx))?;
            let fd = this.inner.as_raw_fd();
            let slot = &this.slot;
            let unfilled = buf.initialize_unfilled();
            match this
                .inner
                .try_io(Interest::READABLE, || recv_with_fds(fd, unfilled, slot))
            {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The client's side: writes `data` (a whole request) on `stream` with `fd` attached to its
/// first bytes, as `PUT /network-interfaces/{id}/forwards` wants its listening socket.
pub fn send_with_fd(
    stream: &std::os::unix::net::UnixStream,
    data: &[u8],
    fd: std::os::fd::BorrowedFd<'_>,
) -> io::Result<()> {
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; its pointers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space.min(std::mem::size_of_val(&control));
    // SAFETY: the control buffer has room for one header and one fd (CMSG_SPACE above).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        libc::CMSG_DATA(cmsg)
            .cast::<RawFd>()
            .write_unaligned(fd.as_raw_fd());
    }
    // SAFETY: `msg` points at live buffers for the call; the data is only read.
    let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    let sent = usize::try_from(sent).map_err(|_| io::Error::last_os_error())?;
    // The descriptor went with the first bytes; the rest is plain data.
    use std::io::Write;
    let rest = data.get(sent..).unwrap_or_default();
    let mut writer = stream;
    writer.write_all(rest)
}
