//! The endpoint on synthetic frames: ARP, a hand-made TCP handshake and request, a whole
//! V2 exchange driven by a smoltcp client standing in for the guest, and hostile frames.

use serde_json::json;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::wire::{EthernetFrame, Ipv4Packet, TcpPacket};

use super::*;
use crate::MmdsVersion;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const GUEST_IP: [u8; 4] = [10, 0, 2, 15];

fn mmds(version: MmdsVersion) -> Arc<Mutex<Mmds>> {
    let mut m = Mmds::new(crate::DEFAULT_SIZE_LIMIT).unwrap();
    m.set_version(version);
    m.store_mut()
        .put(json!({"latest": {"meta-data": {"instance-id": "i-1234"}}}))
        .unwrap();
    Arc::new(Mutex::new(m))
}

fn endpoint(version: MmdsVersion) -> Endpoint {
    Endpoint::new(mmds(version), DEFAULT_IPV4).unwrap()
}

fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&GUEST_IP);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&DEFAULT_IPV4.octets());
    f
}

/// An Ethernet/IPv4/TCP frame from the guest (checksums left zero: not verified).
fn tcp_frame(src_port: u16, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = MMDS_MAC.to_vec();
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 20 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&GUEST_IP);
    f.extend_from_slice(&DEFAULT_IPV4.octets());
    f.extend_from_slice(&src_port.to_be_bytes());
    f.extend_from_slice(&HTTP_PORT.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags]);
    f.extend_from_slice(&65535u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const RST: u8 = 0x04;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;

fn drain(ep: &mut Endpoint, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0; 2048];
    while let Some(n) = ep.next_frame_at(&mut buf, now) {
        out.push(buf[..n].to_vec());
    }
    out
}

/// (flags, seq, ack, payload) of a TCP frame the endpoint sent.
fn tcp_of(frame: &[u8]) -> (u8, u32, u32, Vec<u8>) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.src_addr().0, MMDS_MAC);
    assert_eq!(eth.dst_addr().0, GUEST_MAC);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.src_addr(), DEFAULT_IPV4);
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    let flags = tcp.into_inner()[13];
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    (
        flags,
        tcp.seq_number().0 as u32,
        tcp.ack_number().0 as u32,
        tcp.payload().to_vec(),
    )
}

#[test]
fn answers_arp_for_its_address_only() {
    let mut ep = endpoint(MmdsVersion::V1);
    let t = Instant::from_millis(1);
    ep.receive_frame_at(&arp_request(), t);
    let out = drain(&mut ep, t);
    assert_eq!(out.len(), 1);
    let reply = &out[0];
    assert_eq!(&reply[0..6], &GUEST_MAC);
    assert_eq!(&reply[12..14], &[0x08, 0x06]);
    assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
    assert_eq!(&reply[22..28], &MMDS_MAC);
    assert_eq!(&reply[28..32], &DEFAULT_IPV4.octets());
    let mut other = arp_request();
    other[38..42].copy_from_slice(&[10, 0, 2, 2]);
    assert!(!is_for_mmds(&other, DEFAULT_IPV4));
    assert!(is_for_mmds(&arp_request(), DEFAULT_IPV4));
}

#[test]
fn syn_gets_syn_ack_and_a_request_gets_its_response() {
    let mut ep = endpoint(MmdsVersion::V1);
    let t = Instant::from_millis(1);
    ep.receive_frame_at(&arp_request(), t);
    drain(&mut ep, t);
    let syn = tcp_frame(40000, SYN, 1000, 0, &[]);
    assert!(is_for_mmds(&syn, DEFAULT_IPV4));
    ep.receive_frame_at(&syn, t);
    let out = drain(&mut ep, t);
    assert_eq!(out.len(), 1);
    let (flags, their_seq, ack, _) = tcp_of(&out[0]);
    assert_eq!(flags & (SYN | ACK), SYN | ACK);
    assert_eq!(ack, 1001);
    let request = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n";
    let mut next = their_seq.wrapping_add(1);
    ep.receive_frame_at(&tcp_frame(40000, ACK, 1001, next, &[]), t);
    ep.receive_frame_at(&tcp_frame(40000, ACK | PSH, 1001, next, request), t);
    let mut response = Vec::new();
    let mut fin = false;
    for frame in drain(&mut ep, t) {
        let (flags, seq, _, payload) = tcp_of(&frame);
        if !payload.is_empty() {
            assert_eq!(seq, next);
            next = next.wrapping_add(payload.len() as u32);
            response.extend_from_slice(&payload);
        }
        fin |= flags & FIN != 0;
    }
    let text = String::from_utf8(response).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\ni-1234"), "{text}");
    assert!(fin, "the connection is closed after the response");
}

#[test]
fn a_syn_long_after_the_last_frame_is_accepted() {
    let mut ep = endpoint(MmdsVersion::V1);
    let t = Instant::from_millis(1);
    ep.receive_frame_at(&arp_request(), t);
    drain(&mut ep, t);
    // A slow guest: its next connection comes minutes later.
    let later = t + smoltcp::time::Duration::from_secs(300);
    ep.receive_frame_at(&tcp_frame(40001, SYN, 5, 0, &[]), later);
    let flags: Vec<u8> = drain(&mut ep, later).iter().map(|f| tcp_of(f).0).collect();
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags[0] & (SYN | ACK | RST), SYN | ACK, "{flags:?}");
}

#[test]
fn connections_beyond_the_limit_are_reset() {
    let mut ep = endpoint(MmdsVersion::V1);
    let t = Instant::from_millis(1);
    ep.receive_frame_at(&arp_request(), t);
    drain(&mut ep, t);
    let mut syn_acks = 0;
    let mut resets = 0;
    for port in 0..(MAX_CONNECTIONS as u16 + 4) {
        ep.receive_frame_at(&tcp_frame(50000 + port, SYN, 7, 0, &[]), t);
        for frame in drain(&mut ep, t) {
            let (flags, ..) = tcp_of(&frame);
            if flags & (SYN | ACK) == SYN | ACK {
                syn_acks += 1;
            } else if flags & RST != 0 {
                resets += 1;
            }
        }
    }
    assert_eq!(syn_acks, MAX_CONNECTIONS);
    assert_eq!(resets, 4);
    // Idle connections are reset and their slots listen again.
    let later = t + smoltcp::time::Duration::from_secs(31);
    drain(&mut ep, later);
    drain(&mut ep, later);
    ep.receive_frame_at(&tcp_frame(60000, SYN, 7, 0, &[]), later);
    let flags: Vec<u8> = drain(&mut ep, later).iter().map(|f| tcp_of(f).0).collect();
    assert!(
        flags.iter().any(|f| f & (SYN | ACK) == SYN | ACK),
        "{flags:?}"
    );
}

#[test]
fn hostile_frames_do_not_break_it() {
    let mut ep = endpoint(MmdsVersion::V1);
    let t = Instant::from_millis(1);
    let syn = tcp_frame(1, SYN, 1, 0, &[]);
    for len in 0..syn.len() {
        let _ = is_for_mmds(&syn[..len], DEFAULT_IPV4);
        ep.receive_frame_at(&syn[..len], t);
    }
    let mut bad_ihl = syn.clone();
    bad_ihl[14] = 0x4f;
    assert!(!is_for_mmds(&bad_ihl, DEFAULT_IPV4));
    ep.receive_frame_at(&bad_ihl, t);
    ep.receive_frame_at(&vec![0xab; 70_000], t);
    let mut junk = tcp_frame(2, ACK | PSH, 5, 5, &[0xff; 1400]);
    ep.receive_frame_at(&junk, t);
    junk[14 + 20 + 12] = 0xf0; // data offset beyond the segment
    ep.receive_frame_at(&junk, t);
    drain(&mut ep, t);
}

#[test]
fn a_syn_from_the_unspecified_address_is_dropped_not_answered() {
    // The fuzzer's find: smoltcp's listener answered this SYN and panicked sending to 0.0.0.0.
    let mut ep = endpoint(MmdsVersion::V1);
    let t = Instant::from_millis(1);
    let mut syn = tcp_frame(40000, SYN, 1000, 0, &[]);
    syn[26..30].fill(0);
    assert!(crate::wire::from_unspecified_ipv4(&syn));
    ep.receive_frame_at(&syn, t);
    assert!(drain(&mut ep, t).is_empty());
    // The same SYN from the guest's address is answered.
    let syn = tcp_frame(40000, SYN, 1000, 0, &[]);
    assert!(!crate::wire::from_unspecified_ipv4(&syn));
    ep.receive_frame_at(&syn, t);
    assert_eq!(drain(&mut ep, t).len(), 1);
}

/// A guest-side stack: a smoltcp client, with frames shuttled both ways.
struct Guest {
    iface: Interface,
    sockets: SocketSet<'static>,
    /// The guest stack's device: the endpoint's frames are pushed in, the guest's popped out.
    wire: FrameWire,
}

impl Guest {
    fn new() -> Self {
        let mut wire = FrameWire::new(256, 4096);
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC))),
            &mut wire,
            Instant::ZERO,
        );
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(Ipv4Addr::from(GUEST_IP).into(), 0));
        });
        Guest {
            iface,
            sockets: SocketSet::new(Vec::new()),
            wire,
        }
    }

    /// Sends `request` on a new connection and returns all that comes back.
    fn exchange(&mut self, ep: &mut Endpoint, request: &[u8], port: u16) -> String {
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 128 * 1024]),
            tcp::SocketBuffer::new(vec![0; 8 * 1024]),
        );
        let handle = self.sockets.add(socket);
        let cx = self.iface.context();
        self.sockets
            .get_mut::<tcp::Socket>(handle)
            .connect(cx, (DEFAULT_IPV4, HTTP_PORT), port)
            .unwrap();
        let mut sent = false;
        let mut reply = Vec::new();
        let mut buf = vec![0; 2048];
        for step in 0..2000 {
            let now = Instant::from_millis(10 + step);
            self.iface.poll(now, &mut self.wire, &mut self.sockets);
            while let Some(n) = self.wire.pop_to_guest(&mut buf) {
                assert!(is_for_mmds(&buf[..n], DEFAULT_IPV4));
                ep.receive_frame_at(&buf[..n], now);
            }
            while let Some(n) = ep.next_frame_at(&mut buf, now) {
                self.wire.push_from_guest(&buf[..n], |_| {});
            }
            let s = self.sockets.get_mut::<tcp::Socket>(handle);
            if s.can_send() && !sent {
                s.send_slice(request).unwrap();
                sent = true;
            }
            while let Ok(n @ 1..) = s.recv_slice(&mut buf) {
                reply.extend_from_slice(&buf[..n]);
            }
            if sent && !s.may_recv() {
                s.close();
                break;
            }
        }
        String::from_utf8(reply).unwrap()
    }
}

#[test]
fn a_v2_client_gets_a_token_then_a_large_value() {
    let mmds = mmds(MmdsVersion::V2);
    let big = "x".repeat(40_000);
    lock(&mmds)
        .store_mut()
        .patch(&json!({"latest": {"user-data": big}}))
        .unwrap();
    let mut ep = Endpoint::new(mmds, DEFAULT_IPV4).unwrap();
    let mut guest = Guest::new();
    let reply = guest.exchange(
        &mut ep,
        b"PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n",
        41000,
    );
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    let token = reply.rsplit("\r\n\r\n").next().unwrap().to_string();
    let reply = guest.exchange(&mut ep, b"GET /latest/user-data HTTP/1.1\r\n\r\n", 41001);
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    let get = format!("GET /latest/user-data HTTP/1.1\r\nX-metadata-token: {token}\r\n\r\n");
    let reply = guest.exchange(&mut ep, get.as_bytes(), 41002);
    assert!(
        reply.starts_with("HTTP/1.1 200 OK"),
        "{}",
        &reply[..80.min(reply.len())]
    );
    assert!(reply.ends_with(&big));
    // Slots are reused: many more connections than slots, one after another.
    for port in 0..(2 * MAX_CONNECTIONS as u16) {
        let reply = guest.exchange(&mut ep, get.as_bytes(), 42000 + port);
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "connection {port}");
    }
}
