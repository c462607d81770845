//! The relay between a real host TCP client and a smoltcp "guest" (a real TCP stack) on
//! synthetic frames.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};

use super::*;
use mmds::wire::FrameWire;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const PASST_MAC: [u8; 6] = [0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55];
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const GUEST_PORT: u16 = 8000;

/// A guest: smoltcp with one listening socket on [`GUEST_PORT`].
struct Guest {
    iface: Interface,
    /// The guest stack's device: the relay's frames are pushed in, the guest's popped out.
    wire: FrameWire,
    sockets: SocketSet<'static>,
    server: SocketHandle,
    /// Frames the guest sent that the relay did not take (they went to passt).
    to_passt: Vec<Vec<u8>>,
}

fn listening() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 8192]),
        tcp::SocketBuffer::new(vec![0; 8192]),
    );
    s.listen(GUEST_PORT).unwrap();
    s
}

impl Guest {
    fn new() -> Self {
        let mut wire = FrameWire::new(512, 70000);
        let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC)));
        let mut iface = Interface::new(config, &mut wire, Instant::ZERO);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(GUEST_IP.into(), 24)).unwrap();
        });
        iface.routes_mut().add_default_ipv4_route(GATEWAY).unwrap();
        let mut sockets = SocketSet::new(Vec::new());
        let server = sockets.add(listening());
        Self {
            iface,
            wire,
            sockets,
            server,
            to_passt: Vec::new(),
        }
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.server)
    }
}

/// A relay with passt's MAC learned and one forward to the guest's port; the host
/// client's address.
fn relay_with_forward() -> (Relay, std::net::SocketAddr) {
    let mut relay = Relay::new(GUEST_IP, GATEWAY).unwrap();
    let mut from_passt = vec![0u8; 60];
    from_passt[6..12].copy_from_slice(&PASST_MAC);
    relay.learn(&from_passt);
    let addr = add_forward(&mut relay, GUEST_PORT).unwrap();
    (relay, addr)
}

fn add_forward(relay: &mut Relay, guest_port: u16) -> Result<std::net::SocketAddr, RelayError> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    relay.add(forward(addr.port(), guest_port), OwnedFd::from(listener))?;
    Ok(addr)
}

fn forward(host_port: u16, guest_port: u16) -> Forward {
    Forward {
        protocol: Protocol::Tcp,
        host_addr: None,
        host_port,
        guest_addr: None,
        guest_port,
    }
}

/// Runs relay and guest for `rounds` steps of 10 ms of their time from `*now`.
fn run(relay: &mut Relay, guest: &mut Guest, now: &mut Instant, rounds: usize) {
    let mut buf = vec![0u8; 70000];
    for _ in 0..rounds {
        *now += SmolDuration::from_millis(10);
        relay.service_at(*now);
        while let Some(n) = relay.next_frame(&mut buf) {
            guest.wire.push_from_guest(&buf[..n], |_| {});
        }
        guest.iface.poll(*now, &mut guest.wire, &mut guest.sockets);
        while let Some(n) = guest.wire.pop_to_guest(&mut buf) {
            let frame = buf[..n].to_vec();
            match relay.steer(&frame) {
                Steer::Stack => relay.receive_frame_at(&frame, *now),
                Steer::Both => {
                    relay.receive_frame_at(&frame, *now);
                    guest.to_passt.push(frame);
                }
                Steer::Backend => guest.to_passt.push(frame),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn client(addr: std::net::SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    c
}

#[test]
fn data_flows_both_ways_and_fins_close_both_sides() {
    let (mut relay, addr) = relay_with_forward();
    let mut guest = Guest::new();
    let mut now = Instant::ZERO;
    let mut host = client(addr);
    run(&mut relay, &mut guest, &mut now, 20);
    assert_eq!(guest.socket().state(), tcp::State::Established);
    assert_eq!(relay.forwards()[0].connections, 1);

    host.write_all(b"hello guest\n").unwrap();
    run(&mut relay, &mut guest, &mut now, 10);
    let mut got = [0u8; 64];
    let n = guest.socket().recv_slice(&mut got).unwrap();
    assert_eq!(&got[..n], b"hello guest\n");

    // A reply larger than one segment, then the guest's FIN.
    let reply: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(guest.socket().send_slice(&reply).unwrap(), reply.len());
    guest.socket().close();
    run(&mut relay, &mut guest, &mut now, 20);
    let mut received = Vec::new();
    host.read_to_end(&mut received).unwrap();
    assert_eq!(received, reply, "the guest's bytes, then EOF");

    drop(host);
    run(&mut relay, &mut guest, &mut now, 20);
    assert!(
        !relay.has_connections(),
        "both sides closed: the connection is freed"
    );
    assert_eq!(relay.forwards()[0].connections, 0);
    assert!(
        guest
            .to_passt
            .iter()
            .all(|f| !matches!(tcp_tuple(f), Some(t) if t.dst_port >= 61000)),
        "no segment of the relay's connection reached passt"
    );
}

#[test]
fn the_host_closing_first_sends_the_guest_a_fin() {
    let (mut relay, addr) = relay_with_forward();
    let mut guest = Guest::new();
    let mut now = Instant::ZERO;
    let mut host = client(addr);
    host.write_all(b"bye").unwrap();
    host.shutdown(Shutdown::Write).unwrap();
    run(&mut relay, &mut guest, &mut now, 20);
    let mut got = [0u8; 8];
    let n = guest.socket().recv_slice(&mut got).unwrap();
    assert_eq!(&got[..n], b"bye");
    assert_eq!(guest.socket().state(), tcp::State::CloseWait);
    guest.socket().send_slice(b"ok").unwrap();
    guest.socket().close();
    run(&mut relay, &mut guest, &mut now, 20);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"ok");
}

#[test]
fn a_guest_reset_closes_the_host_connection() {
    let (mut relay, addr) = relay_with_forward();
    let mut guest = Guest::new();
    let mut now = Instant::ZERO;
    let mut host = client(addr);
    run(&mut relay, &mut guest, &mut now, 20);
    guest.socket().abort();
    run(&mut relay, &mut guest, &mut now, 10);
    assert!(!relay.has_connections());
    let mut buf = [0u8; 8];
    assert!(matches!(host.read(&mut buf), Ok(0) | Err(_)));
}

#[test]
fn a_closed_guest_port_resets_and_frees_the_connection() {
    let mut relay = Relay::new(GUEST_IP, GATEWAY).unwrap();
    let mut from_passt = vec![0u8; 60];
    from_passt[6..12].copy_from_slice(&PASST_MAC);
    relay.learn(&from_passt);
    let addr = add_forward(&mut relay, 9).unwrap();
    let mut guest = Guest::new();
    let mut now = Instant::ZERO;
    let mut host = client(addr);
    run(&mut relay, &mut guest, &mut now, 20);
    assert!(!relay.has_connections());
    assert!(matches!(host.read(&mut [0u8; 8]), Ok(0) | Err(_)));
}

#[test]
fn steering_takes_only_the_relays_segments_and_arp_replies_to_the_gateway() {
    let (mut relay, addr) = relay_with_forward();
    let mut guest = Guest::new();
    let mut now = Instant::ZERO;
    let _host = client(addr);
    run(&mut relay, &mut guest, &mut now, 20);
    let conn = relay.connections.first().unwrap();
    let (local, guest_port) = (conn.local_port, conn.guest_port);
    let segment = |src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16| {
        let mut f = vec![0u8; 54];
        f[12..14].copy_from_slice(&[8, 0]);
        f[14] = 0x45;
        f[23] = 6;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    };
    let g = GUEST_IP.octets();
    let gw = GATEWAY.octets();
    assert_eq!(
        relay.steer(&segment(g, guest_port, gw, local)),
        Steer::Stack
    );
    assert_eq!(
        relay.steer(&segment(g, guest_port + 1, gw, local)),
        Steer::Backend
    );
    assert_eq!(
        relay.steer(&segment(g, guest_port, gw, local + 1)),
        Steer::Backend
    );
    assert_eq!(
        relay.steer(&segment(g, guest_port, [1, 1, 1, 1], local)),
        Steer::Backend
    );
    assert_eq!(
        relay.steer(&segment([10, 0, 2, 16], guest_port, gw, local)),
        Steer::Backend
    );
    let mut arp = vec![0u8; 42];
    arp[12..14].copy_from_slice(&[8, 6]);
    arp[14..20].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
    arp[20..22].copy_from_slice(&[0, 2]);
    arp[38..42].copy_from_slice(&gw);
    assert_eq!(relay.steer(&arp), Steer::Both);
    arp[21] = 1;
    assert_eq!(
        relay.steer(&arp),
        Steer::Backend,
        "ARP requests stay passt's"
    );
    // The guest's ARP reply to the relay's request went to passt too.
    assert!(guest.to_passt.iter().any(|f| is_arp_reply_to(f, GATEWAY)));
}

#[test]
fn without_passts_mac_a_connection_is_closed() {
    let mut relay = Relay::new(GUEST_IP, GATEWAY).unwrap();
    let addr = add_forward(&mut relay, GUEST_PORT).unwrap();
    let mut host = client(addr);
    std::thread::sleep(std::time::Duration::from_millis(20));
    relay.service_at(Instant::ZERO);
    assert!(!relay.has_connections());
    assert!(matches!(host.read(&mut [0u8; 8]), Ok(0) | Err(_)));
}

#[test]
fn connections_per_forward_are_bounded() {
    let (mut relay, addr) = relay_with_forward();
    let clients: Vec<TcpStream> = (0..=MAX_CONNECTIONS_PER_FORWARD)
        .map(|_| client(addr))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(50));
    // Only the relay runs: its connections wait for the guest's answer.
    relay.service_at(Instant::ZERO);
    assert_eq!(relay.forwards()[0].connections, MAX_CONNECTIONS_PER_FORWARD);
    let mut last = clients.last().unwrap();
    assert!(matches!(last.read(&mut [0u8; 8]), Ok(0) | Err(_)));
}

#[test]
fn an_idle_connection_is_reset() {
    let (mut relay, addr) = relay_with_forward();
    let mut guest = Guest::new();
    let mut now = Instant::ZERO;
    let mut host = client(addr);
    run(&mut relay, &mut guest, &mut now, 20);
    assert!(relay.has_connections());
    assert!(relay.poll_delay(now).unwrap() <= Duration::from_secs(1));
    now += ms(IDLE_TIMEOUT) + SmolDuration::from_secs(1);
    // The relay's ARP entry for the guest expired meanwhile: the reset waits for it.
    run(&mut relay, &mut guest, &mut now, 20);
    assert!(!relay.has_connections());
    assert!(matches!(host.read(&mut [0u8; 8]), Ok(0) | Err(_)));
    assert!(
        matches!(
            guest.socket().state(),
            tcp::State::Closed | tcp::State::Listen
        ),
        "the guest got a reset: {}",
        guest.socket().state()
    );
}

#[test]
fn removing_a_forward_resets_its_connections_and_closes_its_port() {
    let (mut relay, addr) = relay_with_forward();
    let mut guest = Guest::new();
    let mut now = Instant::ZERO;
    let mut host = client(addr);
    run(&mut relay, &mut guest, &mut now, 20);
    relay.remove(addr.port()).unwrap();
    run(&mut relay, &mut guest, &mut now, 5);
    assert!(!relay.has_connections());
    assert!(relay.forwards().is_empty());
    assert!(matches!(host.read(&mut [0u8; 8]), Ok(0) | Err(_)));
    assert!(TcpStream::connect(addr).is_err(), "the host port is closed");
    assert!(matches!(
        relay.remove(addr.port()),
        Err(RelayError::NoSuchForward(_))
    ));
}

#[test]
fn bad_forwards_and_sockets_are_refused() {
    let mut relay = Relay::new(GUEST_IP, GATEWAY).unwrap();
    let addr = add_forward(&mut relay, 22).unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut dup = forward(addr.port(), 23);
    assert!(matches!(
        relay.add(dup, OwnedFd::from(other.try_clone().unwrap())),
        Err(RelayError::Duplicate(_))
    ));
    dup.protocol = Protocol::Udp;
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let e = relay.add(dup, OwnedFd::from(udp)).unwrap_err();
    assert!(e.to_string().contains("stop it first"), "{e}");
    let mut elsewhere = forward(other.local_addr().unwrap().port(), 22);
    elsewhere.guest_addr = Some(Ipv4Addr::new(10, 0, 2, 99));
    assert!(matches!(
        relay.add(elsewhere, OwnedFd::from(other.try_clone().unwrap())),
        Err(RelayError::GuestAddress(..))
    ));
    // The socket must listen where the forward says.
    let wrong_port = forward(other.local_addr().unwrap().port().wrapping_add(1), 22);
    assert!(matches!(
        relay.add(wrong_port, OwnedFd::from(other.try_clone().unwrap())),
        Err(RelayError::NotAListener(_))
    ));
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    assert!(matches!(
        relay.add(forward(udp_port, 22), OwnedFd::from(udp)),
        Err(RelayError::NotAListener(_))
    ));
    let connected = TcpStream::connect(addr).unwrap();
    let port = connected.local_addr().unwrap().port();
    assert!(matches!(
        relay.add(forward(port, 22), OwnedFd::from(connected)),
        Err(RelayError::NotAListener(_))
    ));
    assert_eq!(relay.forwards().len(), 1);
}

#[test]
fn hostile_frames_never_panic() {
    let (mut relay, addr) = relay_with_forward();
    let mut guest = Guest::new();
    let mut now = Instant::ZERO;
    let _host = client(addr);
    run(&mut relay, &mut guest, &mut now, 20);
    let conn = relay.connections.first().unwrap();
    let (local, guest_port) = (conn.local_port, conn.guest_port);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..2000usize {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed as usize) % 200;
        let mut f: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
        if round % 2 == 0 && f.len() >= 54 {
            // A segment of the relay's own connection with garbage in it.
            f[12..14].copy_from_slice(&[8, 0]);
            f[14] = 0x45;
            f[23] = 6;
            f[20..22].fill(0);
            f[26..30].copy_from_slice(&GUEST_IP.octets());
            f[30..34].copy_from_slice(&GATEWAY.octets());
            f[34..36].copy_from_slice(&guest_port.to_be_bytes());
            f[36..38].copy_from_slice(&local.to_be_bytes());
        }
        let _ = relay.steer(&f);
        relay.receive_frame_at(&f, now);
    }
    relay.receive_frame_at(&vec![0u8; MAX_IN_FRAME + 1], now);
    while relay.next_frame(&mut [0u8; 2048]).is_some() {}
}
