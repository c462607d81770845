//! Port forwards added to a running `nat` VM (VirtualBox's `controlvm natpf`), without
//! restarting passt and without the VMM opening sockets: the CLI binds the host port and
//! hands the listening socket over; the relay accepts on it, and carries each host
//! connection to the guest as a TCP connection of its own (smoltcp) from the NAT gateway's
//! address (10.0.2.2, with the gateway's MAC learned from passt's frames) and a local
//! port in [`LOCAL_PORTS`].
//!
//! Guest frames of those connections (the exact 4-tuple) and ARP replies to the gateway
//! come in through [`Relay::steer`] and [`Relay::receive_frame`]; frames for the guest go
//! out through [`Relay::next_frame`]. Bounded: [`MAX_FORWARDS`] forwards,
//! [`MAX_CONNECTIONS_PER_FORWARD`] connections each, [`CONNECTION_BUFFER`] bytes buffered
//! each way per connection, [`IDLE_TIMEOUT`]. TCP only: passt keeps UDP.

use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use mmds::wire::FrameWire;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::config::{Forward, Protocol};
use crate::forward_frames::{gateway_mac_of, is_arp_reply_to, tcp_tuple, Steer};

/// Run-time forwards on one NIC.
pub const MAX_FORWARDS: usize = 32;
/// Connections open at once through one forward; more are accepted and closed at once.
pub const MAX_CONNECTIONS_PER_FORWARD: usize = 64;
/// Bytes buffered per connection in each direction.
pub const CONNECTION_BUFFER: usize = 64 * 1024;
/// A connection that moved no data for this long is reset.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A guest that does not complete the handshake in this time gets a reset.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an aborted connection's reset may wait for the guest's MAC (ARP).
const RESET_GRACE: Duration = Duration::from_secs(3);
/// A guest that acknowledges nothing for this long loses the connection.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// The relay's ports on the gateway address: above Linux's ephemeral range
/// (32768–60999), where passt's own connections from the gateway come from.
pub const LOCAL_PORTS: std::ops::RangeInclusive<u16> = 61000..=65535;
/// Largest frame taken from the guest (a segmentation-offload frame at most).
const MAX_IN_FRAME: usize = 65536 + 18;
/// Frames waiting either way; smoltcp keeps the rest of its data in its sockets.
const MAX_QUEUED_FRAMES: usize = 512;
/// The interface's MAC until passt's is seen.
const PLACEHOLDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("UDP forwards cannot be added to a running VM: stop it first, or give the forward when the VM is created")]
    Udp,
    #[error("host port {0} is already forwarded on this network interface")]
    Duplicate(u16),
    #[error("this network interface has {MAX_FORWARDS} run-time forwards already")]
    TooMany,
    #[error("no run-time forward on host port {0}")]
    NoSuchForward(u16),
    #[error("forward to guest address {0}: this network interface's guest is at {1}")]
    GuestAddress(Ipv4Addr, Ipv4Addr),
    #[error("the socket handed over is not a listening IPv4 TCP socket on {0}")]
    NotAListener(String),
    #[error("cannot use the listening socket: {0}")]
    Socket(#[source] io::Error),
}

/// A run-time forward and its open connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveForward {
    pub forward: Forward,
    pub connections: usize,
}

struct Listening {
    forward: Forward,
    listener: TcpListener,
    connections: usize,
}

/// One host connection carried to the guest.
struct Connection {
    /// The forward it came through.
    host_port: u16,
    handle: SocketHandle,
    /// None once the host side is gone (reset, error, forward removed).
    stream: Option<TcpStream>,
    local_port: u16,
    guest_port: u16,
    host_eof: bool,
    host_shut: bool,
    last_progress: Instant,
    /// When its socket was first seen closed (a reset may still wait for ARP).
    closed_at: Option<Instant>,
}

pub struct Relay {
    guest_ip: Ipv4Addr,
    gateway_ip: Ipv4Addr,
    gateway_mac: Option<[u8; 6]>,
    iface: Interface,
    sockets: SocketSet<'static>,
    wire: FrameWire,
    forwards: Vec<Listening>,
    connections: Vec<Connection>,
    /// The listeners and host streams, edge-triggered: readable when one has news.
    host_events: Epoll,
    next_port: u16,
    origin: std::time::Instant,
}

fn random_seed() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

fn ms(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Whether the guest has closed its sending side (or the connection is gone).
fn guest_finished(state: tcp::State) -> bool {
    use tcp::State::*;
    matches!(state, CloseWait | LastAck | Closing | TimeWait | Closed)
}

/// `send(2)` without SIGPIPE when the host client went away.
fn send_to_host(stream: &TcpStream, data: &[u8]) -> io::Result<usize> {
    // SAFETY: sends from a live slice on an open socket.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn sockopt(fd: &OwnedFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live c_int.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// `fd` as a non-blocking listener, when it is an IPv4 TCP socket listening where
/// `forward` says.
fn check_listener(fd: OwnedFd, forward: &Forward) -> Result<TcpListener, RelayError> {
    let host_addr = forward.host_addr.unwrap_or(Ipv4Addr::LOCALHOST);
    let wanted = format!("{host_addr}:{}", forward.host_port);
    let listening = sockopt(&fd, libc::SO_DOMAIN).map_err(RelayError::Socket)? == libc::AF_INET
        && sockopt(&fd, libc::SO_TYPE).map_err(RelayError::Socket)? == libc::SOCK_STREAM
        && sockopt(&fd, libc::SO_ACCEPTCONN).map_err(RelayError::Socket)? == 1;
    if !listening {
        return Err(RelayError::NotAListener(wanted));
    }
    let listener = TcpListener::from(fd);
    match listener.local_addr().map_err(RelayError::Socket)? {
        SocketAddr::V4(a) if *a.ip() == host_addr && a.port() == forward.host_port => {}
        _ => return Err(RelayError::NotAListener(wanted)),
    }
    set_nonblocking(&listener).map_err(RelayError::Socket)?;
    Ok(listener)
}

/// O_NONBLOCK on `listener` (fcntl: std's `set_nonblocking` is an ioctl the API thread's
/// seccomp filter does not allow).
fn set_nonblocking(listener: &TcpListener) -> io::Result<()> {
    let fd = listener.as_raw_fd();
    // SAFETY: fcntl on an open fd with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A connection from a listener, non-blocking; `Ok(None)` when none waits.
fn accept(listener: &TcpListener) -> io::Result<Option<TcpStream>> {
    loop {
        // SAFETY: accept4 without an address buffer; the result is checked.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: a new fd owned by nobody else.
            return Ok(Some(unsafe { TcpStream::from_raw_fd(fd) }));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
            _ => return Err(e),
        }
    }
}

impl Relay {
    /// A relay to the guest at `guest_ip` from the gateway at `gateway_ip`.
    pub fn new(guest_ip: Ipv4Addr, gateway_ip: Ipv4Addr) -> io::Result<Self> {
        Self::with_seed(guest_ip, gateway_ip, random_seed())
    }

    /// [`Self::new`] with smoltcp's random seed (initial sequence numbers) given: for
    /// reproducible fuzzing.
    pub fn with_seed(guest_ip: Ipv4Addr, gateway_ip: Ipv4Addr, seed: u64) -> io::Result<Self> {
        let host_events = Epoll::new()?;
        let mut wire = FrameWire::new(MAX_QUEUED_FRAMES, MAX_IN_FRAME);
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(PLACEHOLDER_MAC)));
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut wire, Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(gateway_ip.into(), 24));
        });
        Ok(Self {
            guest_ip,
            gateway_ip,
            gateway_mac: None,
            iface,
            sockets: SocketSet::new(Vec::new()),
            wire,
            forwards: Vec::new(),
            connections: Vec::new(),
            host_events,
            next_port: *LOCAL_PORTS.start(),
            origin: std::time::Instant::now(),
        })
    }

    /// The fd that is readable when a listener or host connection has news.
    pub fn host_fd(&self) -> std::os::fd::RawFd {
        self.host_events.as_raw_fd()
    }

    pub fn now(&self) -> Instant {
        Instant::from_micros(i64::try_from(self.origin.elapsed().as_micros()).unwrap_or(i64::MAX))
    }

    /// Forward `forward` (TCP) from the listening socket `listener` (bound where the
    /// forward says) to the guest.
    pub fn add(&mut self, forward: Forward, listener: OwnedFd) -> Result<(), RelayError> {
        if forward.protocol == Protocol::Udp {
            return Err(RelayError::Udp);
        }
        if let Some(addr) = forward.guest_addr.filter(|&a| a != self.guest_ip) {
            return Err(RelayError::GuestAddress(addr, self.guest_ip));
        }
        if self
            .forwards
            .iter()
            .any(|l| l.forward.host_port == forward.host_port)
        {
            return Err(RelayError::Duplicate(forward.host_port));
        }
        if self.forwards.len() >= MAX_FORWARDS {
            return Err(RelayError::TooMany);
        }
        let listener = check_listener(listener, &forward)?;
        let fd = listener.as_raw_fd();
        self.host_events
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, fd as u64),
            )
            .map_err(RelayError::Socket)?;
        tracing::info!(
            host_port = forward.host_port,
            guest_port = forward.guest_port,
            "run-time forward added"
        );
        self.forwards.push(Listening {
            forward,
            listener,
            connections: 0,
        });
        Ok(())
    }

    /// Stops forwarding `host_port`: its listener closes and its connections are reset.
    pub fn remove(&mut self, host_port: u16) -> Result<Forward, RelayError> {
        let index = self
            .forwards
            .iter()
            .position(|l| l.forward.host_port == host_port)
            .ok_or(RelayError::NoSuchForward(host_port))?;
        let removed = self.forwards.remove(index);
        for conn in self
            .connections
            .iter_mut()
            .filter(|c| c.host_port == host_port)
        {
            self.sockets.get_mut::<tcp::Socket>(conn.handle).abort();
            conn.stream = None;
        }
        tracing::info!(host_port, "run-time forward removed");
        Ok(removed.forward)
    }

    /// The run-time forwards and their open connections.
    pub fn forwards(&self) -> Vec<LiveForward> {
        self.forwards
            .iter()
            .map(|l| LiveForward {
                forward: l.forward,
                connections: l.connections,
            })
            .collect()
    }

    pub fn has_forwards(&self) -> bool {
        !self.forwards.is_empty()
    }

    pub fn has_connections(&self) -> bool {
        !self.connections.is_empty()
    }

    /// The open connections' (guest port, relay port) pairs.
    pub fn connection_ports(&self) -> Vec<(u16, u16)> {
        self.connections
            .iter()
            .map(|c| (c.guest_port, c.local_port))
            .collect()
    }

    /// Notes a frame the backend (passt) sent the guest: its source is the gateway's MAC.
    pub fn learn(&mut self, frame: &[u8]) {
        if let Some(mac) = gateway_mac_of(frame) {
            if self.gateway_mac != Some(mac) {
                self.gateway_mac = Some(mac);
                self.iface
                    .set_hardware_addr(HardwareAddress::Ethernet(EthernetAddress(mac)));
            }
        }
    }

    /// Where a frame from the guest goes.
    pub fn steer(&self, frame: &[u8]) -> Steer {
        if self.connections.is_empty() {
            return Steer::Backend;
        }
        if is_arp_reply_to(frame, self.gateway_ip) {
            return Steer::Both;
        }
        match tcp_tuple(frame) {
            Some(t)
                if t.src == self.guest_ip
                    && t.dst == self.gateway_ip
                    && self
                        .connections
                        .iter()
                        .any(|c| c.guest_port == t.src_port && c.local_port == t.dst_port) =>
            {
                Steer::Stack
            }
            _ => Steer::Backend,
        }
    }

    /// Takes a frame [`Self::steer`] sent here, and moves everything on.
    pub fn receive_frame(&mut self, frame: &[u8]) {
        let now = self.now();
        self.receive_frame_at(frame, now);
    }

    pub fn receive_frame_at(&mut self, frame: &[u8], now: Instant) {
        self.wire.push_from_guest(frame, |_| {});
        self.service_at(now);
    }

    /// Whether frames wait for the guest.
    pub fn has_output(&self) -> bool {
        self.wire.has_output()
    }

    /// The next frame for the guest, copied into `buf`; frames longer than `buf` are dropped.
    pub fn next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.wire.pop_to_guest(buf)
    }

    /// When [`Self::service`] must run next (smoltcp's timers, idle limits); None while
    /// no connection is open.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        if self.connections.is_empty() {
            return None;
        }
        let stack = self
            .iface
            .poll_delay(now, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()));
        // The idle and connect limits are checked at least once a second.
        Some(stack.map_or(Duration::from_secs(1), |d| d.min(Duration::from_secs(1))))
    }

    /// Accepts host connections, moves data both ways, runs smoltcp's timers.
    pub fn service(&mut self) {
        let now = self.now();
        self.service_at(now);
    }

    pub fn service_at(&mut self, now: Instant) {
        self.drain_host_events();
        self.accept_all(now);
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
        for conn in &mut self.connections {
            let socket = self.sockets.get_mut::<tcp::Socket>(conn.handle);
            pump(conn, socket, now);
        }
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
        self.reap(now);
    }

    /// Empties the host set's ready list: every pass tries every connection anyway.
    fn drain_host_events(&self) {
        let mut events = [EpollEvent::default(); 32];
        while matches!(self.host_events.wait(0, &mut events), Ok(n) if n == events.len()) {}
    }

    fn accept_all(&mut self, now: Instant) {
        for index in 0..self.forwards.len() {
            while let Some(listening) = self.forwards.get(index) {
                match accept(&listening.listener) {
                    Ok(Some(stream)) => self.start_connection(index, stream, now),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "run-time forward: accept failed");
                        break;
                    }
                }
            }
        }
    }

    /// A local port no connection uses.
    fn free_local_port(&mut self) -> Option<u16> {
        let count = LOCAL_PORTS.len();
        for _ in 0..count {
            let port = self.next_port;
            self.next_port = if port == *LOCAL_PORTS.end() {
                *LOCAL_PORTS.start()
            } else {
                port + 1
            };
            if !self.connections.iter().any(|c| c.local_port == port) {
                return Some(port);
            }
        }
        None
    }

    /// Opens the guest side of a new host connection; drops the host connection when the
    /// gateway's MAC is not known yet or the forward is at its limit.
    fn start_connection(&mut self, index: usize, stream: TcpStream, now: Instant) {
        let Some(listening) = self.forwards.get(index) else {
            return;
        };
        let forward = listening.forward;
        if self.gateway_mac.is_none() {
            tracing::warn!(
                host_port = forward.host_port,
                "run-time forward: the guest has not used its network yet; connection closed"
            );
            return;
        }
        if listening.connections >= MAX_CONNECTIONS_PER_FORWARD {
            tracing::warn!(
                host_port = forward.host_port,
                "run-time forward: {MAX_CONNECTIONS_PER_FORWARD} connections open; connection closed"
            );
            return;
        }
        let Some(local_port) = self.free_local_port() else {
            return;
        };
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; CONNECTION_BUFFER]),
            tcp::SocketBuffer::new(vec![0; CONNECTION_BUFFER]),
        );
        socket.set_timeout(Some(ms(ACK_TIMEOUT)));
        socket.set_nagle_enabled(false);
        if let Err(e) = socket.connect(
            self.iface.context(),
            (self.guest_ip, forward.guest_port),
            local_port,
        ) {
            tracing::warn!(error = %e, "run-time forward: cannot open the guest connection");
            return;
        }
        let fd = stream.as_raw_fd();
        let events = EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED;
        if let Err(e) = self.host_events.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(events, fd as u64),
        ) {
            tracing::warn!(error = %e, "run-time forward: cannot watch the host connection");
            return;
        }
        let handle = self.sockets.add(socket);
        if let Some(l) = self.forwards.get_mut(index) {
            l.connections += 1;
        }
        self.connections.push(Connection {
            host_port: forward.host_port,
            handle,
            stream: Some(stream),
            local_port,
            guest_port: forward.guest_port,
            host_eof: false,
            host_shut: false,
            last_progress: now,
            closed_at: None,
        });
    }

    /// Frees the connections that are over: closed with their reset sent (or given up
    /// on after [`RESET_GRACE`]), or in TIME-WAIT.
    fn reap(&mut self, now: Instant) {
        let mut index = 0;
        while let Some(conn) = self.connections.get_mut(index) {
            let socket = self.sockets.get::<tcp::Socket>(conn.handle);
            let over = match socket.state() {
                tcp::State::TimeWait => true,
                tcp::State::Closed => {
                    let closed_at = *conn.closed_at.get_or_insert(now);
                    socket.remote_endpoint().is_none() || now - closed_at > ms(RESET_GRACE)
                }
                _ => false,
            };
            if over {
                let conn = self.connections.swap_remove(index);
                self.sockets.remove(conn.handle);
                if let Some(l) = self
                    .forwards
                    .iter_mut()
                    .find(|l| l.forward.host_port == conn.host_port)
                {
                    l.connections = l.connections.saturating_sub(1);
                }
            } else {
                index += 1;
            }
        }
    }
}

/// Moves one connection's data: the guest's to the host, the host's to the guest, the
/// closes each way; resets it when the host side failed or it idled too long.
fn pump(conn: &mut Connection, socket: &mut tcp::Socket, now: Instant) {
    let Some(stream) = conn.stream.as_ref() else {
        return;
    };
    let mut progress = false;
    let mut failed = false;
    while socket.can_recv() {
        match socket.recv(|data| match send_to_host(stream, data) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        }) {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(_)) => progress = true,
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(_)) => {
                failed = true;
                break;
            }
        }
    }
    if !failed && !conn.host_shut && !socket.can_recv() && guest_finished(socket.state()) {
        let _ = stream.shutdown(Shutdown::Write);
        conn.host_shut = true;
    }
    while !failed && !conn.host_eof && socket.may_send() && socket.can_send() {
        match socket.send(|room| match (&*stream).read(room) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        }) {
            Ok(Ok(0)) => {
                conn.host_eof = true;
                socket.close();
            }
            Ok(Ok(_)) => progress = true,
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(_)) => failed = true,
            Err(_) => break,
        }
    }
    if progress {
        conn.last_progress = now;
    }
    let idle = now - conn.last_progress;
    let timed_out = idle > ms(IDLE_TIMEOUT)
        || (socket.state() == tcp::State::SynSent && idle > ms(CONNECT_TIMEOUT));
    if failed || timed_out {
        socket.abort();
        conn.stream = None;
    } else if socket.state() == tcp::State::Closed {
        // The guest reset the connection.
        conn.stream = None;
    }
}

#[cfg(test)]
#[path = "forward_relay_tests.rs"]
mod tests;
