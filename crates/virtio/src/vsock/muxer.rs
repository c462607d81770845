//! The host side of a vsock device, Firecracker's model: guest connections to host port
//! P become Unix connections to `UDS_PATH_P`; host clients of the listener at `UDS_PATH`
//! send `CONNECT P\n`, reach guest port P and get `OK <host port>\n` back.
//!
//! All host sockets sit in one epoll set whose fd the VMM's I/O thread watches (as a NIC's
//! tap fd): when it is readable the device runs its queues, and the receive queue drains
//! the set ([`Muxer::poll_host`]). Registrations are edge-triggered; what an edge announced
//! is kept as per-connection state until it is used, so nothing is lost and nothing spins.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound::{Excluded, Unbounded};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use super::conn::{pending, Conn, HostRead, State};
use super::packet::{op, Header, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::uds::{self, ConnectLine, LineState, UdsError};

/// Most connections at once; a guest REQUEST or host client beyond it is refused.
pub const MAX_CONNS: usize = 1024;
/// Most host clients that have not finished their CONNECT line.
pub const MAX_WAITING: usize = 64;
/// RSTs queued for the guest at most; answers to further bad packets are dropped (a guest
/// that sends junk and posts no receive buffers cannot make the queue grow).
pub const MAX_QUEUED_RSTS: usize = 1024;
/// Host ports given to host-initiated connections: from 2^30 up, as Firecracker does.
const FIRST_HOST_PORT: u32 = 1 << 30;
/// How long a host client's `CONNECT P` waits for the guest to accept by default
/// (Firecracker's 2 s): then the guest gets a RST and the client sees its connection closed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

const TOKEN_LISTENER: u64 = 0;
const TOKEN_WAKE: u64 = 1;
const TOKEN_TIMER: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    #[error("vsock socket {0}")]
    Uds(#[from] UdsError),
    #[error("vsock connect timer: {0}")]
    Timer(#[source] std::io::Error),
    #[error("vsock {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// (host port, guest port).
type Key = (u32, u32);

struct Entry {
    conn: Conn,
    token: u64,
}

pub struct Muxer {
    uds: PathBuf,
    guest_cid: u64,
    epoll: Epoll,
    listener: UnixListener,
    wake: EventFd,
    /// Fires at the first deadline of `connecting`.
    timer: TimerFd,
    /// Host-initiated connections waiting for the guest's RESPONSE, oldest first (one
    /// timeout for all, so deadlines come in order): (deadline, connection, its token).
    connecting: VecDeque<(Instant, Key, u64)>,
    connect_timeout: Duration,
    next_token: u64,
    waiting: HashMap<u64, (UnixStream, ConnectLine)>,
    conns: BTreeMap<Key, Entry>,
    tokens: HashMap<u64, Key>,
    rsts: VecDeque<Header>,
    /// The connection served last, for round-robin.
    cursor: Key,
    last_host_port: u32,
    keys: Vec<Key>,
}

fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> MuxerError {
    move |source| MuxerError::Io { what, source }
}

impl Muxer {
    /// Listen at `uds` (see [`uds::bind_listener`] for an existing file) for a guest with
    /// context ID `guest_cid`.
    pub fn new(uds: &Path, guest_cid: u64) -> Result<Self, MuxerError> {
        let epoll = Epoll::new().map_err(io_err("epoll"))?;
        let wake = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
        let timer = TimerFd::new().map_err(|e| MuxerError::Timer(e.into()))?;
        let listener = uds::bind_listener(uds)?;
        let mux = Self {
            uds: uds.to_path_buf(),
            guest_cid,
            epoll,
            listener,
            wake,
            timer,
            connecting: VecDeque::new(),
            connect_timeout: CONNECT_TIMEOUT,
            next_token: TOKEN_TIMER + 1,
            waiting: HashMap::new(),
            conns: BTreeMap::new(),
            tokens: HashMap::new(),
            rsts: VecDeque::new(),
            cursor: (0, 0),
            last_host_port: FIRST_HOST_PORT - 1,
            keys: Vec::new(),
        };
        let et = EventSet::IN | EventSet::EDGE_TRIGGERED;
        mux.register(mux.listener.as_raw_fd(), TOKEN_LISTENER, et, false)
            .map_err(io_err("epoll_ctl"))?;
        mux.register(mux.wake.as_raw_fd(), TOKEN_WAKE, et, false)
            .map_err(io_err("epoll_ctl"))?;
        mux.register(mux.timer.as_raw_fd(), TOKEN_TIMER, et, false)
            .map_err(io_err("epoll_ctl"))?;
        Ok(mux)
    }

    /// The fd that is readable when host sockets need attention.
    pub fn epoll_fd(&self) -> std::os::fd::RawFd {
        self.epoll.as_raw_fd()
    }

    /// How long host-initiated connections wait for the guest to accept (for new ones).
    pub fn set_connect_timeout(&mut self, timeout: Duration) {
        self.connect_timeout = timeout;
    }

    pub fn uds_path(&self) -> &Path {
        &self.uds
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Make the epoll fd readable, so the I/O thread runs the receive queue (the transmit
    /// queue produced packets for the guest).
    pub fn wake(&self) {
        let _ = self.wake.write(1);
    }

    fn register(&self, fd: i32, token: u64, events: EventSet, modify: bool) -> std::io::Result<()> {
        let operation = if modify {
            ControlOperation::Modify
        } else {
            ControlOperation::Add
        };
        self.epoll
            .ctl(operation, fd, EpollEvent::new(events, token))
    }

    fn conn_events() -> EventSet {
        EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED
    }

    fn push_rst(&mut self, hdr: Header) {
        if self.rsts.len() < MAX_QUEUED_RSTS {
            self.rsts.push_back(hdr);
        }
    }

    /// Drop a connection (closing its host socket); with `rst`, tell the guest.
    fn kill(&mut self, key: Key, rst: bool) {
        let Some(entry) = self.conns.remove(&key) else {
            return;
        };
        self.tokens.remove(&entry.token);
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            entry.conn.stream.as_raw_fd(),
            EpollEvent::default(),
        );
        if rst {
            self.push_rst(self.header(key, op::RST));
        }
    }

    fn header(&self, key: Key, op: u16) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.0,
            dst_port: key.1,
            kind: TYPE_STREAM,
            op,
            ..Header::default()
        }
    }

    fn add_conn(&mut self, key: Key, conn: Conn, token: u64, modify: bool) -> bool {
        let fd = conn.stream.as_raw_fd();
        if self
            .register(fd, token, Self::conn_events(), modify)
            .is_err()
        {
            return false;
        }
        self.tokens.insert(token, key);
        self.conns.insert(key, Entry { conn, token });
        true
    }

    /// Forget everything of the driver that went away (device reset): all connections and
    /// waiting host clients are closed; the listener stays.
    pub fn reset(&mut self) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for key in keys {
            self.kill(key, false);
        }
        for (_, (stream, _)) in self.waiting.drain() {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                stream.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        self.rsts.clear();
        self.connecting.clear();
        self.arm_timer(Instant::now());
    }

    // ---- guest → host ----

    /// A packet from the guest whose header passed [`Header::check`]; `payload` is its
    /// data (RW only).
    pub fn from_guest(&mut self, hdr: &Header, payload: &[u8]) {
        let key = (hdr.dst_port, hdr.src_port);
        let Some(entry) = self.conns.get_mut(&key) else {
            match hdr.op {
                op::REQUEST => self.guest_connect(key, hdr),
                op::RST => {}
                _ => self.push_rst(hdr.rst_reply()),
            }
            return;
        };
        let conn = &mut entry.conn;
        conn.peer_credit_from(hdr);
        let ok = match hdr.op {
            op::RST => {
                self.kill(key, false);
                return;
            }
            op::RESPONSE if conn.state == State::Connecting => {
                conn.state = State::Established;
                let line = format!("OK {}\n", key.0);
                // A fresh socket's buffer always takes the short line whole.
                matches!(std::io::Write::write(&mut conn.stream, line.as_bytes()), Ok(n) if n == line.len())
            }
            op::SHUTDOWN => {
                conn.guest_shutdown |= hdr.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                conn.flush().is_ok()
            }
            op::RW
                if conn.state == State::Established && conn.guest_shutdown & SHUTDOWN_SEND == 0 =>
            {
                conn.write_from_guest(payload).is_ok()
            }
            op::CREDIT_UPDATE => true,
            op::CREDIT_REQUEST => {
                conn.pending |= pending::CREDIT_UPDATE;
                true
            }
            // A second REQUEST, a RESPONSE nobody asked for, data before or after its time.
            _ => false,
        };
        if !ok || conn.finished() {
            self.kill(key, true);
        }
    }

    /// A packet from the guest failed its checks: reset its connection, if it names one
    /// of the host's, else answer it with an RST.
    pub fn refuse(&mut self, hdr: &Header) {
        let key = (hdr.dst_port, hdr.src_port);
        if hdr.dst_cid == HOST_CID && self.conns.contains_key(&key) {
            self.kill(key, true);
        } else {
            self.push_rst(hdr.rst_reply());
        }
    }

    /// The guest connects to host port `key.0`: connect to `UDS_PATH_<port>`.
    fn guest_connect(&mut self, key: Key, hdr: &Header) {
        let refuse = self.header(key, op::RST);
        if self.conns.len() >= MAX_CONNS {
            return self.push_rst(refuse);
        }
        let Ok(stream) = uds::connect(&uds::port_path(&self.uds, key.0)) else {
            return self.push_rst(refuse);
        };
        let mut conn = Conn::new(stream, State::Established, pending::RESPONSE);
        conn.peer_credit_from(hdr);
        conn.readable = true;
        let token = self.new_token();
        if !self.add_conn(key, conn, token, false) {
            self.push_rst(refuse);
        }
    }

    fn new_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    // ---- host events ----

    /// Take in everything the host sockets reported: new clients, CONNECT lines, readable
    /// and writable streams.
    pub fn poll_host(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            for ev in &events[..n] {
                self.host_event(ev.data(), ev.event_set());
            }
            if n < events.len() {
                return;
            }
        }
    }

    fn host_event(&mut self, token: u64, set: EventSet) {
        match token {
            TOKEN_LISTENER => self.accept_all(),
            TOKEN_WAKE => {
                let _ = self.wake.read();
            }
            TOKEN_TIMER => self.expire_connects(Instant::now()),
            _ => {
                if let Some(&key) = self.tokens.get(&token) {
                    self.conn_event(key, set);
                } else if self.waiting.contains_key(&token) {
                    self.read_connect_line(token);
                }
            }
        }
    }

    fn conn_event(&mut self, key: Key, set: EventSet) {
        let Some(entry) = self.conns.get_mut(&key) else {
            return;
        };
        let conn = &mut entry.conn;
        if set
            .intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR)
        {
            conn.readable = true;
        }
        if set.intersects(EventSet::OUT | EventSet::HANG_UP | EventSet::ERROR) {
            let ok = conn.flush().is_ok();
            if !ok || conn.finished() {
                self.kill(key, true);
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return, // WouldBlock, or a client gone before accept
            };
            if self.waiting.len() >= MAX_WAITING
                || self.conns.len() >= MAX_CONNS
                || stream.set_nonblocking(true).is_err()
            {
                continue; // dropped: the client sees its connection closed
            }
            let token = self.new_token();
            let events = EventSet::IN | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
            if self
                .register(stream.as_raw_fd(), token, events, false)
                .is_ok()
            {
                self.waiting.insert(token, (stream, ConnectLine::default()));
                // The line may be there already (its edge came before the registration).
                self.read_connect_line(token);
            }
        }
    }

    fn read_connect_line(&mut self, token: u64) {
        let Some((stream, line)) = self.waiting.get_mut(&token) else {
            return;
        };
        let state = line.read_from(stream);
        if state == LineState::Pending {
            return;
        }
        let Some((stream, _)) = self.waiting.remove(&token) else {
            return;
        };
        let LineState::Port(port) = state else {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                stream.as_raw_fd(),
                EpollEvent::default(),
            );
            return;
        };
        if self.conns.len() >= MAX_CONNS {
            return; // closed on drop (and thereby removed from the epoll set)
        }
        let key = (self.alloc_host_port(port), port);
        let mut conn = Conn::new(stream, State::Connecting, pending::REQUEST);
        conn.readable = true;
        if self.add_conn(key, conn, token, true) {
            self.connecting
                .push_back((Instant::now() + self.connect_timeout, key, token));
            if self.connecting.len() == 1 {
                self.arm_timer(Instant::now());
            }
        }
    }

    /// Resets the host-initiated connections the guest has not accepted by `now`.
    fn expire_connects(&mut self, now: Instant) {
        while let Some(&(deadline, key, token)) = self.connecting.front() {
            if deadline > now {
                break;
            }
            self.connecting.pop_front();
            let waiting = self
                .conns
                .get(&key)
                .is_some_and(|e| e.token == token && e.conn.state == State::Connecting);
            if waiting {
                self.kill(key, true);
            }
        }
        // Arming (or disarming) also clears the expirations the timerfd counted.
        self.arm_timer(now);
    }

    /// Sets the timer to the first deadline of `connecting`, or stops it.
    fn arm_timer(&mut self, now: Instant) {
        let result = match self.connecting.front() {
            // A zero duration would disarm: at least 1 ns.
            Some(&(deadline, _, _)) => self.timer.reset(
                deadline
                    .saturating_duration_since(now)
                    .max(Duration::from_nanos(1)),
                None,
            ),
            None => self.timer.clear(),
        };
        if let Err(e) = result {
            tracing::warn!("vsock: cannot arm the connect timer: {e}");
        }
    }

    /// A host port for a new host-initiated connection to guest port `peer`.
    fn alloc_host_port(&mut self, peer: u32) -> u32 {
        loop {
            self.last_host_port = self.last_host_port.wrapping_add(1).max(FIRST_HOST_PORT);
            if !self.conns.contains_key(&(self.last_host_port, peer)) {
                return self.last_host_port;
            }
        }
    }

    // ---- host → guest ----

    /// Whether a packet may be waiting for the guest.
    pub fn has_rx(&self) -> bool {
        !self.rsts.is_empty()
            || self
                .conns
                .values()
                .any(|e| e.conn.pending != 0 || e.conn.can_send_data())
    }

    /// The next packet for the guest: its header and, for RW, its `len` bytes at the
    /// start of `buf` (whose length bounds the payload). Connections take turns.
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Option<Header> {
        if let Some(h) = self.rsts.pop_front() {
            return Some(h);
        }
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        let after = self.conns.range((Excluded(self.cursor), Unbounded));
        keys.extend(after.map(|(k, _)| *k));
        keys.extend(self.conns.range(..=self.cursor).map(|(k, _)| *k));
        let mut out = None;
        for &key in &keys {
            out = self.conn_packet(key, buf).or_else(|| self.rsts.pop_front());
            if out.is_some() {
                self.cursor = key;
                break;
            }
        }
        self.keys = keys;
        out
    }

    fn conn_packet(&mut self, key: Key, buf: &mut [u8]) -> Option<Header> {
        let mut hdr = self.header(key, 0);
        let conn = &mut self.conns.get_mut(&key)?.conn;
        let owed = [pending::REQUEST, pending::RESPONSE, pending::CREDIT_UPDATE]
            .into_iter()
            .find(|bit| conn.pending & bit != 0);
        if let Some(bit) = owed {
            conn.pending &= !bit;
            hdr.op = match bit {
                pending::REQUEST => op::REQUEST,
                pending::RESPONSE => op::RESPONSE,
                _ => op::CREDIT_UPDATE,
            };
        } else {
            match conn.read_for_guest(buf) {
                HostRead::Data(n) => {
                    hdr.op = op::RW;
                    hdr.len = n as u32;
                }
                HostRead::Eof => {
                    conn.host_eof = true;
                    hdr.op = op::SHUTDOWN;
                    hdr.flags = SHUTDOWN_SEND;
                }
                HostRead::Nothing => return None,
                HostRead::Failed(_) => {
                    self.kill(key, true);
                    return None;
                }
            }
        }
        conn.stamp(&mut hdr);
        if conn.finished() {
            self.kill(key, true);
        }
        Some(hdr)
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        // The socket file would only be stale; a later VM replaces it anyway.
        let _ = std::fs::remove_file(&self.uds);
    }
}
