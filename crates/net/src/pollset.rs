//! One pollable fd for a backend made of several: an epoll set, readable while one of its
//! fds is readable (or writable, for an fd watched for room).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An epoll set watching `fds` for input.
pub fn poll_set(fds: &[RawFd]) -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 has no memory arguments; the result is checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ep` is a new fd nobody else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    for &fd in fds {
        watch(&ep, libc::EPOLL_CTL_ADD, fd, false)?;
    }
    Ok(ep)
}

/// Add or change `fd` in the set `ep`: input always, room to write when `out`.
pub fn watch(ep: &OwnedFd, op: libc::c_int, fd: RawFd, out: bool) -> io::Result<()> {
    let mut events = libc::EPOLLIN;
    if out {
        events |= libc::EPOLLOUT;
    }
    let mut event = libc::epoll_event {
        events: events as u32,
        u64: fd as u64,
    };
    // SAFETY: `event` is a valid epoll_event for the call; `ep` and `fd` are open.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut event) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tracks whether the set waits for room on one of its fds.
pub struct RoomWatch {
    fd: RawFd,
    watching: bool,
}

impl RoomWatch {
    pub fn new(fd: RawFd) -> Self {
        Self {
            fd,
            watching: false,
        }
    }

    /// After a send: wait for room while `waiting` (a frame or part of one is held).
    pub fn update(&mut self, ep: &OwnedFd, waiting: bool) -> io::Result<()> {
        if waiting != self.watching {
            watch(ep, libc::EPOLL_CTL_MOD, self.fd, waiting)?;
            self.watching = waiting;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn readable_while_a_member_is_and_room_only_when_asked() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let ep = poll_set(&[a.as_raw_fd()]).unwrap();
        assert!(
            !readable(ep.as_raw_fd()),
            "nothing to read, room not watched"
        );
        use std::io::Write;
        (&b).write_all(b"x").unwrap();
        assert!(readable(ep.as_raw_fd()));
        let mut buf = [0u8; 1];
        use std::io::Read;
        (&a).read_exact(&mut buf).unwrap();
        assert!(!readable(ep.as_raw_fd()));
        let mut room = RoomWatch::new(a.as_raw_fd());
        room.update(&ep, true).unwrap();
        assert!(readable(ep.as_raw_fd()), "a has room: the set says so");
        room.update(&ep, false).unwrap();
        assert!(!readable(ep.as_raw_fd()));
    }
}
