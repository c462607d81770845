//! The MMDS end of a NIC's wire: Ethernet frames the guest sent to the MMDS address come in
//! ([`Endpoint::receive_frame`]), frames for the guest come out ([`Endpoint::next_frame`]).
//! ARP, IPv4 and TCP are smoltcp's; each TCP connection to port 80 carries one HTTP request
//! answered by [`Mmds`]. Everything is bounded: connections, frames queued either way,
//! request size, idle time. Knows nothing of virtio or KVM.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};

use crate::http::{self, Response, MAX_REQUEST_LEN};
use crate::wire::FrameWire;
use crate::Mmds;

/// Firecracker's MMDS MAC address: the source of every frame the endpoint sends.
pub const MMDS_MAC: [u8; 6] = [0x06, 0x01, 0x23, 0x45, 0x67, 0x01];
/// The MMDS address unless `PUT /mmds/config` names another link-local one.
pub const DEFAULT_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const HTTP_PORT: u16 = 80;
/// Connections open at once; a SYN beyond them is answered with a reset.
pub const MAX_CONNECTIONS: usize = 16;
/// Frames waiting for the guest to take them; smoltcp keeps the rest in its sockets.
const MAX_QUEUED_FRAMES: usize = 256;
/// Largest frame taken from the guest (a request is at most [`MAX_REQUEST_LEN`]).
const MAX_IN_FRAME: usize = 16 * 1024;
const SOCKET_TX_BUFFER: usize = 16 * 1024;
/// A connection with no progress for this long is reset.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
const IPPROTO_TCP: u8 = 6;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot seed the MMDS network stack: {0}")]
    Seed(String),
}

/// Whether the guest's `frame` goes to the MMDS at `ip`: an ARP packet about `ip` (a
/// request for its MAC, or the guest's reply to the endpoint's own request), or IPv4/TCP
/// to `ip` port 80.
pub fn is_for_mmds(frame: &[u8], ip: Ipv4Addr) -> bool {
    let ip = ip.octets();
    match frame.get(12..14) {
        Some(t) if t == ETHERTYPE_ARP => {
            // Ethernet/IPv4 ARP: the target protocol address at 24..28 of the packet.
            frame.get(ETH_HEADER + 24..ETH_HEADER + 28) == Some(&ip[..])
        }
        Some(t) if t == ETHERTYPE_IPV4 => {
            let Some(&ver_ihl) = frame.get(ETH_HEADER) else {
                return false;
            };
            let ihl = usize::from(ver_ihl & 0x0f) * 4;
            ver_ihl >> 4 == 4
                && ihl >= 20
                && frame.get(ETH_HEADER + 9) == Some(&IPPROTO_TCP)
                && frame.get(ETH_HEADER + 16..ETH_HEADER + 20) == Some(&ip[..])
                && frame.get(ETH_HEADER + ihl + 2..ETH_HEADER + ihl + 4)
                    == Some(&HTTP_PORT.to_be_bytes()[..])
        }
        _ => false,
    }
}

/// One TCP connection slot: a socket listening on port 80 or serving one request.
struct Connection {
    handle: SocketHandle,
    request: Vec<u8>,
    response: Option<Vec<u8>>,
    sent: usize,
    last_progress: Instant,
}

pub struct Endpoint {
    mmds: Arc<Mutex<Mmds>>,
    ip: Ipv4Addr,
    iface: Interface,
    sockets: SocketSet<'static>,
    connections: Vec<Connection>,
    wire: FrameWire,
    /// Whether a connection is open (then each [`Endpoint::next_frame`] runs the stack).
    active: bool,
    origin: std::time::Instant,
}

fn listening_socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; MAX_REQUEST_LEN]),
        tcp::SocketBuffer::new(vec![0; SOCKET_TX_BUFFER]),
    );
    socket.set_nagle_enabled(false);
    // Port 80 is valid, so listen only fails on a socket that is not closed: new ones are.
    let _ = socket.listen(HTTP_PORT);
    socket
}

fn lock(mmds: &Mutex<Mmds>) -> std::sync::MutexGuard<'_, Mmds> {
    mmds.lock().unwrap_or_else(|p| p.into_inner())
}

impl Endpoint {
    /// An endpoint answering at `ip` with `mmds`.
    pub fn new(mmds: Arc<Mutex<Mmds>>, ip: Ipv4Addr) -> Result<Self, EndpointError> {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| EndpointError::Seed(e.to_string()))?;
        let mut wire = FrameWire::new(MAX_QUEUED_FRAMES, MAX_IN_FRAME);
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(MMDS_MAC)));
        config.random_seed = u64::from_le_bytes(seed);
        let mut iface = Interface::new(config, &mut wire, Instant::ZERO);
        // A /0 prefix: every guest address is on the link, reached by its own MAC.
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(ip.into(), 0));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let connections = (0..MAX_CONNECTIONS)
            .map(|_| Connection {
                handle: sockets.add(listening_socket()),
                request: Vec::new(),
                response: None,
                sent: 0,
                last_progress: Instant::ZERO,
            })
            .collect();
        Ok(Self {
            mmds,
            ip,
            iface,
            sockets,
            connections,
            wire,
            active: false,
            origin: std::time::Instant::now(),
        })
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    fn now(&self) -> Instant {
        Instant::from_micros(i64::try_from(self.origin.elapsed().as_micros()).unwrap_or(i64::MAX))
    }

    /// Takes a frame the guest sent (one [`is_for_mmds`] accepted) and answers it.
    pub fn receive_frame(&mut self, frame: &[u8]) {
        self.receive_frame_at(frame, self.now());
    }

    pub fn receive_frame_at(&mut self, frame: &[u8], now: Instant) {
        // The guest may send through its gateway's MAC: the frame is for us all the same.
        let to_us = |frame: &mut [u8]| {
            if frame[0] & 1 == 0 {
                frame[..6].copy_from_slice(&MMDS_MAC);
            }
        };
        if self.wire.push_from_guest(frame, to_us) {
            self.poll(now);
        }
    }

    /// Whether frames wait for the guest.
    pub fn has_output(&self) -> bool {
        self.wire.has_output()
    }

    /// The next frame for the guest, copied into `buf`; frames longer than `buf` are dropped.
    pub fn next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.next_frame_at(buf, self.now())
    }

    pub fn next_frame_at(&mut self, buf: &mut [u8], now: Instant) -> Option<usize> {
        if !self.wire.has_output() && self.active {
            self.poll(now);
        }
        self.wire.pop_to_guest(buf)
    }

    fn poll(&mut self, now: Instant) {
        // A connection's idle time starts when its SYN arrives, not at the last poll.
        for conn in &mut self.connections {
            if self.sockets.get::<tcp::Socket>(conn.handle).state() == tcp::State::Listen {
                conn.last_progress = now;
            }
        }
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
        for index in 0..self.connections.len() {
            self.serve(index, now);
        }
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
        self.active = self
            .connections
            .iter()
            .any(|c| self.sockets.get::<tcp::Socket>(c.handle).state() != tcp::State::Listen);
    }

    /// Moves one connection on: read its request, answer it, close, listen again.
    fn serve(&mut self, index: usize, now: Instant) {
        let Some(conn) = self.connections.get_mut(index) else {
            return;
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(conn.handle);
        match socket.state() {
            tcp::State::Listen => {
                conn.last_progress = now;
                return;
            }
            tcp::State::Closed | tcp::State::TimeWait => {
                *socket = listening_socket();
                conn.request.clear();
                conn.response = None;
                conn.sent = 0;
                conn.last_progress = now;
                return;
            }
            _ => {}
        }
        if now - conn.last_progress > IDLE_TIMEOUT.into() {
            socket.abort();
            return;
        }
        if socket.can_recv() && conn.response.is_none() {
            let mut chunk = [0u8; 2048];
            while let Ok(n @ 1..) = socket.recv_slice(&mut chunk) {
                let room = MAX_REQUEST_LEN.saturating_sub(conn.request.len());
                conn.request.extend_from_slice(&chunk[..n.min(room)]);
                conn.last_progress = now;
            }
            conn.response = match http::parse_request(&conn.request) {
                Ok(Some(request)) => {
                    Some(lock(&self.mmds).respond(&request).to_bytes(request.http10))
                }
                Ok(None) => None,
                Err(e) => Some(Response::text(400, e.to_string()).to_bytes(false)),
            };
        }
        if conn.response.is_none() && socket.state() == tcp::State::CloseWait {
            // The guest closed its side without a whole request.
            socket.close();
            return;
        }
        if let Some(response) = &conn.response {
            if let Some(rest) = response.get(conn.sent..) {
                if let Ok(n @ 1..) = socket.send_slice(rest) {
                    conn.sent += n;
                    conn.last_progress = now;
                }
            }
            if conn.sent >= response.len() {
                socket.close();
            }
        }
    }
}

#[cfg(test)]
#[path = "endpoint_tests.rs"]
mod tests;
