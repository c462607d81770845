//! The run-time forward relay (crates/net/src/forward_relay.rs) on arbitrary guest frames:
//! the steering (4-tuple, ARP replies to the gateway), smoltcp's ARP/IPv4/TCP, and the
//! pump between its connections and a real host connection. Never a panic, every frame out
//! a well-formed length.
//!
//! Set-up per input: a relay (fixed random seed, so its sequence numbers repeat) that
//! learned passt's MAC, one forward from a loopback listener to guest port 8000, and a host
//! client connected through it (the relay's SYN is out). Input: the first byte holds
//! flags — bit 0: rewrite each frame's addresses and ports onto the open connection
//! (guest → gateway, its ports) when it is long enough for Ethernet/IPv4/TCP; bit 1: also
//! acknowledge the relay's last segment in it; bit 2: the host client writes a line after
//! each frame. Then frames, each preceded by a big-endian u16 length; its top bit moves the
//! clock 31 minutes (past the idle limit) instead of 10 ms.
#![no_main]

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;

use libfuzzer_sys::fuzz_target;
use net::forward_frames::{tcp_tuple, Steer};
use net::forward_relay::Relay;
use net::{Forward, Protocol};
use smoltcp::time::{Duration, Instant};

const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const PASST_MAC: [u8; 6] = [0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55];
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

/// `frame` as a segment of the connection (guest port, relay port), acknowledging `ack`.
fn rewrite(frame: &mut [u8], ports: (u16, u16), ack: Option<u32>) {
    if frame.len() < 54 {
        return;
    }
    frame[..6].copy_from_slice(&PASST_MAC);
    frame[6..12].copy_from_slice(&GUEST_MAC);
    frame[12..14].copy_from_slice(&[8, 0]);
    frame[14] = 0x45;
    frame[20..22].fill(0);
    frame[23] = 6;
    frame[26..30].copy_from_slice(&GUEST.octets());
    frame[30..34].copy_from_slice(&GATEWAY.octets());
    frame[34..36].copy_from_slice(&ports.0.to_be_bytes());
    frame[36..38].copy_from_slice(&ports.1.to_be_bytes());
    if let Some(ack) = ack {
        frame[42..46].copy_from_slice(&ack.to_be_bytes());
        frame[47] |= 0x10;
    }
}

/// What the guest acknowledges after the relay's `frame`: its sequence number plus its
/// length (SYN and FIN count one).
fn next_ack(frame: &[u8]) -> Option<u32> {
    tcp_tuple(frame)?;
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let tcp = 14 + ihl;
    let seq = u32::from_be_bytes(frame.get(tcp + 4..tcp + 8)?.try_into().ok()?);
    let data_off = usize::from(frame.get(tcp + 12)? >> 4) * 4;
    let flags = *frame.get(tcp + 13)?;
    let payload = total.saturating_sub(ihl + data_off);
    let extra = u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0);
    Some(seq.wrapping_add(payload as u32).wrapping_add(extra))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut input)) = data.split_first() else {
        return;
    };
    let mut relay = Relay::with_seed(GUEST, GATEWAY, 42).expect("epoll");
    let mut from_passt = GUEST_MAC.to_vec();
    from_passt.extend_from_slice(&PASST_MAC);
    from_passt.extend_from_slice(&[8, 0]);
    relay.learn(&from_passt);
    let listener = TcpListener::bind("127.0.0.1:0").expect("loopback");
    let port = listener.local_addr().expect("bound").port();
    let forward = Forward {
        protocol: Protocol::Tcp,
        host_addr: None,
        host_port: port,
        guest_addr: None,
        guest_port: 8000,
    };
    relay.add(forward, OwnedFd::from(listener)).expect("a listener");
    let mut host = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut now = Instant::from_millis(1);
    relay.service_at(now);
    let mut out = vec![0u8; 2048];
    let mut ack = None;
    let mut drain = |relay: &mut Relay, ack: &mut Option<u32>| {
        while let Some(n) = relay.next_frame(&mut out) {
            assert!((14..=out.len()).contains(&n));
            if let Some(a) = next_ack(&out[..n]) {
                *ack = Some(a);
            }
        }
    };
    drain(&mut relay, &mut ack);
    while input.len() >= 2 {
        let header = u16::from_be_bytes([input[0], input[1]]);
        let len = usize::from(header & 0x7fff).min(input.len() - 2);
        let mut frame = input[2..2 + len].to_vec();
        input = &input[2 + len..];
        now += if header & 0x8000 != 0 {
            Duration::from_secs(31 * 60)
        } else {
            Duration::from_millis(10)
        };
        if flags & 1 != 0 {
            if let Some(&ports) = relay.connection_ports().first() {
                rewrite(&mut frame, ports, ack.filter(|_| flags & 2 != 0));
            }
        }
        if flags & 4 != 0 {
            let _ = host.write_all(b"line from the host\n");
        }
        match relay.steer(&frame) {
            Steer::Stack | Steer::Both => relay.receive_frame_at(&frame, now),
            Steer::Backend => relay.service_at(now),
        }
        drain(&mut relay, &mut ack);
    }
});
