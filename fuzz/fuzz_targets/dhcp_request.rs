//! DHCP client messages as the host-only backend parses them from guest frames: never a
//! panic, and every parsed message gets a well-formed reply.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use net::dhcp::{parse_client_message, reply, DhcpConfig};

fuzz_target!(|frame: &[u8]| {
    let _ = net::dhcp::is_dhcp_to_server(frame);
    if let Some(msg) = parse_client_message(frame) {
        let config = DhcpConfig {
            server: Ipv4Addr::new(192, 168, 56, 1),
            server_mac: [0x52, 0x54, 0, 0x56, 0, 1],
            prefix_len: 24,
            router: None,
            lease_secs: 3600,
        };
        let out = reply(&config, &msg, Ipv4Addr::new(192, 168, 56, 101));
        assert!(out.len() >= 14 + 20 + 8 + 300);
    }
});
