//! What the frontend told the backend about one virtqueue, and the running queue once the
//! ring is started (vhost-user: a ring starts on SET_VRING_KICK and stops on
//! GET_VRING_BASE; it only runs while enabled).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use virtio::Queue;

/// Ring addresses as the frontend sent them: its own virtual addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingAddrs {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

/// How the backend learns of new requests.
pub(crate) enum Kick {
    /// An eventfd the frontend writes (registered with the worker's epoll).
    Fd(File),
    /// VHOST_USER_VRING_NOFD_MASK: no fd, the backend polls the ring.
    Polled,
}

pub(crate) struct Vring {
    pub max_size: u16,
    pub size: u16,
    pub addrs: Option<RingAddrs>,
    /// The available index to start from (SET_VRING_BASE) while the ring is stopped.
    pub base: u16,
    /// Set by SET_VRING_KICK; cleared when the ring stops.
    pub kick: Option<Kick>,
    pub call: Option<File>,
    pub err: Option<File>,
    /// SET_VRING_ENABLE's last word (rings start disabled when protocol features are
    /// negotiated).
    pub enabled: bool,
    /// The running queue, between start and stop.
    pub queue: Option<Queue>,
}

/// Write one event to an eventfd the frontend gave us. A full counter or a strange fd
/// (the frontend's business) are ignored: the peer only loses an interrupt it broke.
fn signal(fd: &File) {
    let mut f = fd;
    let _ = f.write(&1u64.to_ne_bytes());
}

impl Vring {
    pub fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            addrs: None,
            base: 0,
            kick: None,
            call: None,
            err: None,
            enabled: false,
            queue: None,
        }
    }

    pub fn is_running(&self) -> bool {
        self.queue.is_some()
    }

    /// Tell the driver about used buffers (no call fd: the frontend polls).
    pub fn signal_used(&self) {
        if let Some(call) = &self.call {
            signal(call);
        }
    }

    /// Report a broken ring to the frontend.
    pub fn signal_error(&self) {
        if let Some(err) = &self.err {
            signal(err);
        }
    }

    /// Consume pending kicks (the fd is non-blocking).
    pub fn drain_kick(&self) {
        if let Some(Kick::Fd(fd)) = &self.kick {
            let mut buf = [0u8; 8];
            let mut f = fd;
            let _ = f.read(&mut buf);
        }
    }

    pub fn kick_fd(&self) -> Option<i32> {
        match &self.kick {
            Some(Kick::Fd(fd)) => Some(fd.as_raw_fd()),
            _ => None,
        }
    }

    pub fn is_polled(&self) -> bool {
        matches!(self.kick, Some(Kick::Polled)) && self.queue.is_some()
    }
}
