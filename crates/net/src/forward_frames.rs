//! Which of the guest's frames belong to the run-time forward relay
//! ([`crate::forward_relay`]): TCP segments of its connections (matched on the exact
//! 4-tuple) and ARP replies to the NAT gateway. Pure functions on hostile bytes: every
//! offset is checked, nothing panics.

use std::net::Ipv4Addr;

const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
const IPPROTO_TCP: u8 = 6;
const ARP_REPLY: [u8; 2] = [0, 2];

pub use crate::diverting_nic::Steer;

/// A TCP segment's addresses: (source address, source port, destination address,
/// destination port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTuple {
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
    pub dst_port: u16,
}

fn ipv4_at(frame: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b: [u8; 4] = frame.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

fn u16_at(frame: &[u8], at: usize) -> Option<u16> {
    let b: [u8; 2] = frame.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_be_bytes(b))
}

/// The addresses of an Ethernet/IPv4/TCP frame (first fragment only), or None.
pub fn tcp_tuple(frame: &[u8]) -> Option<TcpTuple> {
    if frame.get(12..14)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ver_ihl = *frame.get(ETH_HEADER)?;
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    if ver_ihl >> 4 != 4 || ihl < 20 || *frame.get(ETH_HEADER + 9)? != IPPROTO_TCP {
        return None;
    }
    // A later fragment carries no TCP header.
    if u16_at(frame, ETH_HEADER + 6)? & 0x1fff != 0 {
        return None;
    }
    let tcp = ETH_HEADER + ihl;
    // The whole fixed TCP header is present.
    frame.get(tcp..tcp + 20)?;
    Some(TcpTuple {
        src: ipv4_at(frame, ETH_HEADER + 12)?,
        dst: ipv4_at(frame, ETH_HEADER + 16)?,
        src_port: u16_at(frame, tcp)?,
        dst_port: u16_at(frame, tcp + 2)?,
    })
}

/// Whether `frame` is an Ethernet/IPv4 ARP reply whose target address is `gateway`.
pub fn is_arp_reply_to(frame: &[u8], gateway: Ipv4Addr) -> bool {
    frame.get(12..14) == Some(&ETHERTYPE_ARP[..])
        // hardware type Ethernet, protocol IPv4, lengths 6 and 4
        && frame.get(ETH_HEADER..ETH_HEADER + 6) == Some(&[0, 1, 8, 0, 6, 4][..])
        && frame.get(ETH_HEADER + 6..ETH_HEADER + 8) == Some(&ARP_REPLY[..])
        && ipv4_at(frame, ETH_HEADER + 24) == Some(gateway)
}

/// The source MAC of a frame the backend sent the guest, when it is a unicast address:
/// the gateway's MAC (passt sends every frame from it).
pub fn gateway_mac_of(frame: &[u8]) -> Option<[u8; 6]> {
    let mac: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    (mac[0] & 1 == 0 && mac != [0; 6]).then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4);
        f[14] = 0x45;
        f[14 + 9] = IPPROTO_TCP;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn a_tcp_frame_gives_its_tuple_and_short_or_odd_ones_none() {
        let f = tcp_frame([10, 0, 2, 15], 8000, [10, 0, 2, 2], 61000);
        assert_eq!(
            tcp_tuple(&f),
            Some(TcpTuple {
                src: Ipv4Addr::new(10, 0, 2, 15),
                src_port: 8000,
                dst: Ipv4Addr::new(10, 0, 2, 2),
                dst_port: 61000,
            })
        );
        for len in 0..f.len() {
            assert_eq!(tcp_tuple(&f[..len]), None, "truncated to {len}");
        }
        let mut fragment = f.clone();
        fragment[20..22].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(tcp_tuple(&fragment), None);
        let mut udp = f.clone();
        udp[14 + 9] = 17;
        assert_eq!(tcp_tuple(&udp), None);
        let mut bad_ihl = f;
        bad_ihl[14] = 0x4f;
        assert_eq!(tcp_tuple(&bad_ihl), None);
    }

    #[test]
    fn arp_replies_to_the_gateway_are_recognised() {
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&ETHERTYPE_ARP);
        f[14..20].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
        f[20..22].copy_from_slice(&ARP_REPLY);
        f[38..42].copy_from_slice(&[10, 0, 2, 2]);
        assert!(is_arp_reply_to(&f, Ipv4Addr::new(10, 0, 2, 2)));
        assert!(!is_arp_reply_to(&f, Ipv4Addr::new(10, 0, 2, 3)));
        assert!(!is_arp_reply_to(&f[..41], Ipv4Addr::new(10, 0, 2, 2)));
        f[21] = 1;
        assert!(
            !is_arp_reply_to(&f, Ipv4Addr::new(10, 0, 2, 2)),
            "a request"
        );
    }

    #[test]
    fn only_unicast_sources_are_learned() {
        let mut f = vec![0u8; 14];
        assert_eq!(gateway_mac_of(&f), None);
        f[6..12].copy_from_slice(&[0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55]);
        assert_eq!(
            gateway_mac_of(&f),
            Some([0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55])
        );
        f[6] = 0x01;
        assert_eq!(gateway_mac_of(&f), None);
        assert_eq!(gateway_mac_of(&f[..11]), None);
    }
}
