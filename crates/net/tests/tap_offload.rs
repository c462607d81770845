//! Offloads through a tap with a virtio-net header, against a real Linux stack (a network
//! namespace on the tap's other side): a checksum the guest left to the host (NEEDS_CSUM)
//! is accepted by the stack, the same frame without the flag is dropped for its bad
//! checksum; and the stack hands over partial checksums only once the guest accepts them.

mod common;

use std::time::{Duration, Instant};

use common::{can_run, Netns};
use net::tap::TapBackend;
use net::Backend;
use virtio::net::{GuestOffloads, MAX_FRAME_LEN, NET_HDR_LEN};

const NS_ADDR: [u8; 4] = [10, 9, 0, 1];
const OUR_ADDR: [u8; 4] = [10, 9, 0, 2];
const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const NEEDS_CSUM: u8 = 1;

fn namespace_with_tap() -> (Netns, TapBackend) {
    let ns = Netns::new();
    let tap = ns.tap_with("eth0", true);
    ns.sh("ip addr add 10.9.0.1/24 dev eth0");
    ns.sh("ip neigh add 10.9.0.2 lladdr 02:00:00:00:00:02 dev eth0");
    (ns, tap)
}

/// An Ethernet/IPv4/UDP frame from us to the namespace with a deliberately wrong UDP
/// checksum (what a guest leaves for checksum offload to fill in).
fn udp_frame(ns_mac: [u8; 6], port: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&ns_mac);
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&OUR_ADDR);
    ip.extend_from_slice(&NS_ADDR);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0xde, 0xad]);
    f.extend_from_slice(payload);
    f
}

fn ns_mac(ns: &Netns) -> [u8; 6] {
    let out = ns.sh("cat /sys/class/net/eth0/address");
    let mut mac = [0u8; 6];
    for (b, part) in mac.iter_mut().zip(out.trim().split(':')) {
        *b = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

/// Send one frame through the tap, with `flags` in its header, to a UDP listener in the
/// namespace; what the listener got (empty if the stack dropped the datagram).
fn deliver(ns: &Netns, tap: &mut TapBackend, flags: u8, port: u16) -> String {
    let server = ns.spawn(&format!(
        "python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('10.9.0.1', {port})); s.settimeout(2); print(s.recvfrom(100)[0].decode())\""
    ));
    // Send only once the listener is bound (python starts slowly on a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(20);
    while ns
        .sh(&format!("ss -Hnul 'sport = :{port}'"))
        .trim()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the UDP listener on port {port} never bound"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let frame = udp_frame(ns_mac(ns), port, b"offloaded");
    let mut header = [0u8; NET_HDR_LEN];
    header[0] = flags;
    header[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start: the UDP header
    header[8..10].copy_from_slice(&6u16.to_le_bytes()); // csum_offset: its checksum
    assert!(tap.send_with_header(&header, &frame).unwrap());
    String::from_utf8_lossy(&server.finish(10).stdout)
        .trim()
        .to_owned()
}

/// The header of the first UDP frame the namespace sends to us.
fn udp_header_from_namespace(ns: &Netns, tap: &mut TapBackend) -> [u8; NET_HDR_LEN] {
    ns.sh("python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x' * 200, ('10.9.0.2', 9999))\"");
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let mut header = [0u8; NET_HDR_LEN];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tap.recv_with_header(&mut header, &mut buf).unwrap() {
            Some(n) if n > 34 && buf[12..14] == [0x08, 0x00] && buf[23] == 17 => return header,
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    panic!("no UDP frame from the namespace");
}

#[test]
fn checksum_offload_both_ways_through_a_tap() {
    if !can_run(&[("python3", "python3")]) {
        return;
    }
    let (ns, mut tap) = namespace_with_tap();
    assert!(tap.offloads());
    // Guest → host: the bad checksum is only acceptable as "to be filled in".
    assert_eq!(deliver(&ns, &mut tap, NEEDS_CSUM, 7001), "offloaded");
    assert_eq!(
        deliver(&ns, &mut tap, 0, 7002),
        "",
        "a bad checksum without NEEDS_CSUM is dropped"
    );

    // Host → guest: no partial checksums until the guest accepts them.
    tap.set_guest_offloads(GuestOffloads::default()).unwrap();
    assert_eq!(udp_header_from_namespace(&ns, &mut tap)[0] & NEEDS_CSUM, 0);
    tap.set_guest_offloads(GuestOffloads {
        csum: true,
        tso4: true,
        tso6: true,
        ecn: false,
    })
    .unwrap();
    assert_eq!(
        udp_header_from_namespace(&ns, &mut tap)[0] & NEEDS_CSUM,
        NEEDS_CSUM,
        "the stack leaves the checksum to the guest"
    );
}
