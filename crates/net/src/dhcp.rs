//! A DHCP server for one client, answering inside a backend (as `hostonly` does): it
//! recognises a guest's DHCPDISCOVER / DHCPREQUEST in an Ethernet frame and builds the
//! DHCPOFFER / DHCPACK (or DHCPNAK) frame for it, offering the one address the backend
//! leased for that VM. Frames from the guest are untrusted: anything malformed is simply
//! not DHCP (`None`), never a panic.

use std::net::Ipv4Addr;

const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const UDP: u8 = 17;
const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
/// Fixed part of a BOOTP message, up to and including the magic cookie.
const BOOTP_FIXED: usize = 240;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The reply's BOOTP length (with options, padded as BOOTP wants at least 300 bytes).
const REPLY_BOOTP_LEN: usize = 300;

const OPT_PAD: u8 = 0;
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_END: u8 = 255;

const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

/// What the server hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The server's address (the host's address on the network).
    pub server: Ipv4Addr,
    /// The MAC replies come from.
    pub server_mac: [u8; 6],
    pub prefix_len: u8,
    /// Default route for the guest, if the network has one.
    pub router: Option<Ipv4Addr>,
    pub lease_secs: u32,
}

/// A client message the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    pub kind: ClientKind,
    pub xid: [u8; 4],
    pub chaddr: [u8; 6],
    /// Option 50, or `ciaddr` of a renewing client.
    pub requested: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Discover,
    Request,
}

fn ipv4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Whether `frame` is a UDP datagram to the DHCP server port (any IPv4 destination: a
/// renewing client unicasts to the server's address).
pub fn is_dhcp_to_server(frame: &[u8]) -> bool {
    udp_payload(frame, SERVER_PORT).is_some()
}

/// The UDP payload of an IPv4 frame sent to `port`.
fn udp_payload(frame: &[u8], port: u16) -> Option<&[u8]> {
    if frame.get(12..14)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(ETH_HEADER..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if *ip.first()? >> 4 != 4 || ihl < 20 || *ip.get(9)? != UDP {
        return None;
    }
    // Fragments are not DHCP (offset or more-fragments set).
    if u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let ip = ip.get(..total)?;
    let udp = ip.get(ihl..)?;
    let dst = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    let len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    if dst != port || len < 8 {
        return None;
    }
    udp.get(8..len)
}

/// Parse a DHCPDISCOVER or DHCPREQUEST from a client in `frame`; other messages (and
/// anything malformed) give `None`.
pub fn parse_client_message(frame: &[u8]) -> Option<ClientMessage> {
    let bootp = udp_payload(frame, SERVER_PORT)?;
    if bootp.len() < BOOTP_FIXED || bootp[0] != 1 || bootp[1] != 1 || bootp[2] != 6 {
        return None;
    }
    if bootp[236..240] != MAGIC_COOKIE {
        return None;
    }
    let mut xid = [0u8; 4];
    xid.copy_from_slice(&bootp[4..8]);
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&bootp[28..34]);
    let ciaddr = ipv4(&bootp[12..16]);
    let mut kind = None;
    let mut requested = None;
    let mut opts = &bootp[BOOTP_FIXED..];
    while let Some((&code, rest)) = opts.split_first() {
        match code {
            OPT_PAD => {
                opts = rest;
                continue;
            }
            OPT_END => break,
            _ => {}
        }
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        opts = &rest[usize::from(len)..];
        match (code, value) {
            (OPT_MESSAGE_TYPE, [DISCOVER]) => kind = Some(ClientKind::Discover),
            (OPT_MESSAGE_TYPE, [REQUEST]) => kind = Some(ClientKind::Request),
            (OPT_MESSAGE_TYPE, _) => return None,
            (OPT_REQUESTED_IP, [a, b, c, d]) => requested = Some(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => {}
        }
    }
    let kind = kind?;
    if requested.is_none() && !ciaddr.is_unspecified() {
        requested = Some(ciaddr);
    }
    Some(ClientMessage {
        kind,
        xid,
        chaddr,
        requested,
    })
}

/// The Internet checksum (RFC 1071) of `bytes`, ready to store.
pub(crate) fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The server's answer to `msg` from a client whose lease is `addr`: an OFFER to a
/// DISCOVER, an ACK to a REQUEST for `addr` (or with no address named), a NAK to a
/// REQUEST for another address. Broadcast at both layers, which every client accepts.
pub fn reply(config: &DhcpConfig, msg: &ClientMessage, addr: Ipv4Addr) -> Vec<u8> {
    let kind = match msg.kind {
        ClientKind::Discover => OFFER,
        ClientKind::Request if msg.requested.is_none_or(|r| r == addr) => ACK,
        ClientKind::Request => NAK,
    };
    let mut bootp = vec![0u8; REPLY_BOOTP_LEN];
    bootp[0] = 2; // BOOTREPLY
    bootp[1] = 1;
    bootp[2] = 6;
    bootp[4..8].copy_from_slice(&msg.xid);
    bootp[10] = 0x80; // broadcast
    if kind != NAK {
        bootp[16..20].copy_from_slice(&addr.octets());
    }
    bootp[20..24].copy_from_slice(&config.server.octets());
    bootp[28..34].copy_from_slice(&msg.chaddr);
    bootp[236..240].copy_from_slice(&MAGIC_COOKIE);
    let mut opts = vec![OPT_MESSAGE_TYPE, 1, kind, OPT_SERVER_ID, 4];
    opts.extend_from_slice(&config.server.octets());
    if kind != NAK {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(config.prefix_len.min(32)))
            .unwrap_or(0);
        opts.extend_from_slice(&[OPT_LEASE_TIME, 4]);
        opts.extend_from_slice(&config.lease_secs.to_be_bytes());
        opts.extend_from_slice(&[OPT_SUBNET_MASK, 4]);
        opts.extend_from_slice(&mask.to_be_bytes());
        if let Some(router) = config.router {
            opts.extend_from_slice(&[OPT_ROUTER, 4]);
            opts.extend_from_slice(&router.octets());
        }
    }
    opts.push(OPT_END);
    bootp[BOOTP_FIXED..BOOTP_FIXED + opts.len()].copy_from_slice(&opts);

    let udp_len = 8 + bootp.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&SERVER_PORT.to_be_bytes());
    udp.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    udp.extend_from_slice(&bootp);

    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, UDP, 0, 0];
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    ip.extend_from_slice(&config.server.octets());
    ip.extend_from_slice(&Ipv4Addr::BROADCAST.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());

    let mut frame = Vec::with_capacity(ETH_HEADER + ip.len() + udp.len());
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&config.server_mac);
    frame.extend_from_slice(&ETHERTYPE_IPV4);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&udp);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc];

    fn config() -> DhcpConfig {
        DhcpConfig {
            server: Ipv4Addr::new(192, 168, 56, 1),
            server_mac: [0x52, 0x54, 0, 0x56, 0, 1],
            prefix_len: 24,
            router: None,
            lease_secs: 86400,
        }
    }

    /// A client frame: message type `kind`, options `extra`, ciaddr `ciaddr`.
    fn client(kind: u8, extra: &[u8], ciaddr: [u8; 4]) -> Vec<u8> {
        let mut bootp = vec![0u8; 240];
        bootp[0] = 1;
        bootp[1] = 1;
        bootp[2] = 6;
        bootp[4..8].copy_from_slice(&[1, 2, 3, 4]);
        bootp[12..16].copy_from_slice(&ciaddr);
        bootp[28..34].copy_from_slice(&MAC);
        bootp[236..240].copy_from_slice(&MAGIC_COOKIE);
        bootp.extend_from_slice(&[OPT_PAD, OPT_MESSAGE_TYPE, 1, kind]);
        bootp.extend_from_slice(extra);
        bootp.push(OPT_END);
        let mut udp = vec![0, 68, 0, 67, 0, 0, 0, 0];
        let ulen = (8 + bootp.len()) as u16;
        udp[4..6].copy_from_slice(&ulen.to_be_bytes());
        udp.extend_from_slice(&bootp);
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
        ];
        ip[2..4].copy_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&MAC);
        f.extend_from_slice(&ETHERTYPE_IPV4);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&udp);
        f
    }

    /// (message type, yiaddr, options) of a reply frame.
    fn decode(frame: &[u8]) -> (u8, Ipv4Addr, Vec<(u8, Vec<u8>)>) {
        let ip = &frame[14..];
        assert_eq!(checksum(&ip[..20]), 0, "IPv4 header checksum");
        let bootp = udp_payload(frame, CLIENT_PORT).expect("a DHCP reply");
        assert_eq!(bootp[0], 2);
        let mut opts = Vec::new();
        let mut rest = &bootp[240..];
        while rest[0] != OPT_END {
            let len = usize::from(rest[1]);
            opts.push((rest[0], rest[2..2 + len].to_vec()));
            rest = &rest[2 + len..];
        }
        let kind = opts.iter().find(|o| o.0 == OPT_MESSAGE_TYPE).unwrap().1[0];
        (kind, ipv4(&bootp[16..20]), opts)
    }

    #[test]
    fn discover_gets_an_offer_and_request_an_ack() {
        let addr = Ipv4Addr::new(192, 168, 56, 101);
        let d = parse_client_message(&client(DISCOVER, &[], [0; 4])).unwrap();
        assert_eq!(d.kind, ClientKind::Discover);
        assert_eq!(d.chaddr, MAC);
        let (kind, yiaddr, opts) = decode(&reply(&config(), &d, addr));
        assert_eq!((kind, yiaddr), (OFFER, addr));
        assert!(opts.contains(&(OPT_SUBNET_MASK, vec![255, 255, 255, 0])));
        assert!(opts.contains(&(OPT_SERVER_ID, vec![192, 168, 56, 1])));
        assert!(
            !opts.iter().any(|o| o.0 == OPT_ROUTER),
            "host-only: no default route"
        );

        let r = parse_client_message(&client(
            REQUEST,
            &[OPT_REQUESTED_IP, 4, 192, 168, 56, 101],
            [0; 4],
        ))
        .unwrap();
        assert_eq!(r.requested, Some(addr));
        assert_eq!(decode(&reply(&config(), &r, addr)).0, ACK);
        // A renewal names its address in ciaddr.
        let renew = parse_client_message(&client(REQUEST, &[], [192, 168, 56, 101])).unwrap();
        assert_eq!(decode(&reply(&config(), &renew, addr)).0, ACK);
        // Another address than the lease: NAK, no address in it.
        let other = parse_client_message(&client(
            REQUEST,
            &[OPT_REQUESTED_IP, 4, 192, 168, 56, 7],
            [0; 4],
        ))
        .unwrap();
        let (kind, yiaddr, _) = decode(&reply(&config(), &other, addr));
        assert_eq!((kind, yiaddr), (NAK, Ipv4Addr::UNSPECIFIED));
        let with_router = DhcpConfig {
            router: Some(Ipv4Addr::new(192, 168, 56, 1)),
            ..config()
        };
        assert!(decode(&reply(&with_router, &d, addr))
            .2
            .contains(&(OPT_ROUTER, vec![192, 168, 56, 1])));
    }

    #[test]
    fn other_and_malformed_frames_are_not_dhcp() {
        let good = client(DISCOVER, &[], [0; 4]);
        assert!(is_dhcp_to_server(&good));
        // RELEASE is not answered; an unknown type neither.
        assert!(parse_client_message(&client(7, &[], [0; 4])).is_none());
        assert!(parse_client_message(&client(42, &[], [0; 4])).is_none());
        // Every truncation of a good frame is rejected or parsed, never a panic.
        for n in 0..good.len() {
            let _ = parse_client_message(&good[..n]);
        }
        // An option running past the end.
        let mut bad = client(DISCOVER, &[OPT_REQUESTED_IP, 200], [0; 4]);
        bad.pop();
        assert!(parse_client_message(&bad).is_none());
        // Not UDP / wrong port / fragment.
        let mut tcp = good.clone();
        tcp[14 + 9] = 6;
        assert!(parse_client_message(&tcp).is_none());
        let mut port = good.clone();
        port[14 + 20 + 3] = 68;
        assert!(parse_client_message(&port).is_none());
        let mut frag = good.clone();
        frag[14 + 6] = 0x20;
        assert!(parse_client_message(&frag).is_none());
    }
}
