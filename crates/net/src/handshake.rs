//! Completing the TCP handshakes passt leaves open.
//!
//! For a connection to a forwarded port, passt sends the guest a SYN and, when the guest's
//! SYN,ACK arrives, considers the connection established, but the passt of Debian 12
//! (0.0~git20230309) sends the handshake's final ACK only with the first data from the
//! host side (fixed upstream in Sept. 2023, "tcp: Always send an ACK segment once the
//! handshake is completed"). A guest's listener accepts a connection only once that ACK
//! arrives, so a protocol whose server speaks first (SSH's banner, SMTP, a probe that
//! waits for "SSH-2.0-") never starts: the guest retransmits its SYN,ACK until passt gives
//! up. The backend sends that ACK itself, [`ACK_DELAY`] after the SYN,ACK unless passt
//! sent something on the connection first (data from a host client that spoke first, or
//! its own ACK): a guest that sees passt's first segment keeps the handshake passt makes
//! (this passt mistakes the guest's FIN before the ACK of that data for the ACK of data it
//! then sends again and again).
//!
//! IPv4 only: passt runs with `--ipv4-only`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::dhcp::checksum;

const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const IPPROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const TCP_OPT_END: u8 = 0;
const TCP_OPT_NOP: u8 = 1;
const TCP_OPT_WS: u8 = 3;
/// Handshakes waiting for the guest's SYN,ACK, at most (the oldest is forgotten).
const MAX_OPEN: usize = 64;
/// How long the backend waits for passt to complete a handshake itself: well below the
/// guest's SYN,ACK retransmission timeout (1 s).
pub const ACK_DELAY: Duration = Duration::from_millis(200);
/// Length of the ACK sent: Ethernet, IPv4 and TCP headers without options.
pub const ACK_FRAME_LEN: usize = ETH_HEADER + 20 + 20;

/// The TCP segment of an IPv4 frame, parsed as far as needed here.
struct Segment<'a> {
    macs: [[u8; 6]; 2],
    addrs: [[u8; 4]; 2],
    ports: [u16; 2],
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &'a [u8],
}

fn tcp_segment(frame: &[u8]) -> Option<Segment<'_>> {
    if frame.get(12..14)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(ETH_HEADER..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    // Version 4, a first fragment (offset 0) carrying TCP.
    if ip[0] >> 4 != 4 || ihl < 20 || *ip.get(9)? != IPPROTO_TCP {
        return None;
    }
    if u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let tcp = ip.get(ihl..total.max(ihl))?;
    let data_offset = usize::from(*tcp.get(12)? >> 4) * 4;
    if data_offset < 20 {
        return None;
    }
    let options = tcp.get(20..data_offset)?;
    let word = |at: usize| u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
    let half = |at: usize| u16::from_be_bytes([tcp[at], tcp[at + 1]]);
    let mac = |at: usize| -> [u8; 6] { frame[at..at + 6].try_into().unwrap_or_default() };
    let addr = |at: usize| -> [u8; 4] { ip[at..at + 4].try_into().unwrap_or_default() };
    Some(Segment {
        macs: [mac(6), mac(0)],
        addrs: [addr(12), addr(16)],
        ports: [half(0), half(2)],
        seq: word(4),
        ack: word(8),
        flags: tcp[13],
        window: half(14),
        options,
    })
}

/// The window scale option's shift, if the options carry one.
fn window_scale(options: &[u8]) -> Option<u8> {
    let mut rest = options;
    while let Some(&kind) = rest.first() {
        match kind {
            TCP_OPT_END => return None,
            TCP_OPT_NOP => rest = &rest[1..],
            _ => {
                let len = usize::from(*rest.get(1)?);
                if len < 2 || len > rest.len() {
                    return None;
                }
                if kind == TCP_OPT_WS && len == 3 {
                    return Some(rest[2].min(14));
                }
                rest = &rest[len..];
            }
        }
    }
    None
}

/// A connection passt opened towards the guest: (guest address, guest port, peer address,
/// peer port) and what its SYN said.
struct Open {
    guest: ([u8; 4], u16),
    peer: ([u8; 4], u16),
    /// passt's initial sequence number.
    isn: u32,
    window: u16,
    window_scale: Option<u8>,
}

/// An ACK made for the guest, sent at `due` unless passt spoke on the connection first.
struct Answer {
    guest: ([u8; 4], u16),
    peer: ([u8; 4], u16),
    due: Instant,
    frame: Vec<u8>,
}

/// Watches the frames between passt and the guest and makes the ACKs passt leaves out.
#[derive(Default)]
pub struct HandshakeAcks {
    open: VecDeque<Open>,
    answers: VecDeque<Answer>,
}

impl HandshakeAcks {
    fn position(&self, guest: ([u8; 4], u16), peer: ([u8; 4], u16)) -> Option<usize> {
        self.open
            .iter()
            .position(|o| o.guest == guest && o.peer == peer)
    }

    /// A frame from passt to the guest: a SYN opens a handshake; RST or FIN ends it (passt
    /// gave up).
    pub fn from_passt(&mut self, frame: &[u8]) {
        let Some(s) = tcp_segment(frame) else {
            return;
        };
        let (peer, guest) = ((s.addrs[0], s.ports[0]), (s.addrs[1], s.ports[1]));
        // Anything from passt on an answered connection completes the handshake.
        self.answers
            .retain(|a| !(a.guest == guest && a.peer == peer));
        let known = self.position(guest, peer);
        if s.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN {
            if let Some(i) = known {
                self.open.remove(i);
            }
            if self.open.len() >= MAX_OPEN {
                self.open.pop_front();
            }
            self.open.push_back(Open {
                guest,
                peer,
                isn: s.seq,
                window: s.window,
                window_scale: window_scale(s.options),
            });
        } else if s.flags & (TCP_RST | TCP_FIN) != 0 {
            if let Some(i) = known {
                self.open.remove(i);
            }
        }
    }

    /// A frame from the guest to passt at `now`: when it is the SYN,ACK answering passt's
    /// SYN, the ACK completing the handshake is due at `now` + [`ACK_DELAY`] (true).
    pub fn from_guest(&mut self, frame: &[u8], now: Instant) -> bool {
        let Some(ack) = self.ack_for(frame) else {
            return false;
        };
        if self.answers.len() >= MAX_OPEN {
            self.answers.pop_front();
        }
        self.answers.push_back(ack(now + ACK_DELAY));
        true
    }

    /// The next ACK due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        let i = self.answers.iter().position(|a| a.due <= now)?;
        self.answers.remove(i).map(|a| a.frame)
    }

    /// When the next ACK is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.answers.iter().map(|a| a.due).min()
    }

    fn ack_for(&mut self, frame: &[u8]) -> Option<impl FnOnce(Instant) -> Answer> {
        let s = tcp_segment(frame)?;
        if s.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) != TCP_SYN | TCP_ACK {
            return None;
        }
        let (guest, peer) = ((s.addrs[0], s.ports[0]), (s.addrs[1], s.ports[1]));
        let i = self.position(guest, peer)?;
        if s.ack != self.open[i].isn.wrapping_add(1) {
            return None;
        }
        let open = self.open.remove(i)?;
        // The window of the SYN, in the units it has from now on: scaled when both sides
        // sent the option (RFC 7323 §2.2).
        let window = match (open.window_scale, window_scale(s.options)) {
            (Some(shift), Some(_)) => (open.window >> shift).max(1),
            _ => open.window,
        };
        let frame = ack_frame(
            s.macs,
            (peer, guest),
            open.isn.wrapping_add(1),
            s.seq.wrapping_add(1),
            window,
        );
        Some(move |due| Answer {
            guest,
            peer,
            due,
            frame,
        })
    }
}

/// A pure ACK from `peer` to `guest`; `macs` are the guest's and passt's.
fn ack_frame(
    macs: [[u8; 6]; 2],
    (peer, guest): (([u8; 4], u16), ([u8; 4], u16)),
    seq: u32,
    ack: u32,
    window: u16,
) -> Vec<u8> {
    let mut f = vec![0u8; ACK_FRAME_LEN];
    f[0..6].copy_from_slice(&macs[0]);
    f[6..12].copy_from_slice(&macs[1]);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV4);
    let ip = &mut f[ETH_HEADER..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 255; // TTL, as passt sets it
    ip[9] = IPPROTO_TCP;
    ip[12..16].copy_from_slice(&peer.0);
    ip[16..20].copy_from_slice(&guest.0);
    let sum = checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let tcp = &mut ip[20..40];
    tcp[0..2].copy_from_slice(&peer.1.to_be_bytes());
    tcp[2..4].copy_from_slice(&guest.1.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = TCP_ACK;
    tcp[14..16].copy_from_slice(&window.to_be_bytes());
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&peer.0);
    pseudo.extend_from_slice(&guest.0);
    pseudo.extend_from_slice(&[0, IPPROTO_TCP, 0, 20]);
    pseudo.extend_from_slice(tcp);
    let sum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    f
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const PASST_MAC: [u8; 6] = [2, 0xfc, 0, 0, 0, 1];
    pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0xc8, 0x0a, 0x38];
    const GATEWAY: [u8; 4] = [10, 0, 2, 2];
    const GUEST: [u8; 4] = [10, 0, 2, 15];

    /// An IPv4 TCP frame from (`src`, `sport`) to (`dst`, `dport`).
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_frame(
        macs: ([u8; 6], [u8; 6]),
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        options: &[u8],
    ) -> Vec<u8> {
        let tcp_len = 20 + options.len();
        let mut f = vec![0u8; ETH_HEADER + 20 + tcp_len];
        f[0..6].copy_from_slice(&macs.1);
        f[6..12].copy_from_slice(&macs.0);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4);
        let ip = &mut f[ETH_HEADER..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = IPPROTO_TCP;
        ip[12..16].copy_from_slice(&src.0);
        ip[16..20].copy_from_slice(&dst.0);
        let sum = checksum(&ip[..20]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let tcp = &mut ip[20..];
        tcp[0..2].copy_from_slice(&src.1.to_be_bytes());
        tcp[2..4].copy_from_slice(&dst.1.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&ack.to_be_bytes());
        tcp[12] = ((tcp_len / 4) as u8) << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&window.to_be_bytes());
        tcp[20..].copy_from_slice(options);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.0);
        pseudo.extend_from_slice(&dst.0);
        pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
        pseudo.extend_from_slice(&(tcp_len as u16).to_be_bytes());
        pseudo.extend_from_slice(tcp);
        let sum = checksum(&pseudo);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        f
    }

    /// The guest's SYN,ACK to `syn` (passt's SYN), with window scaling.
    pub fn syn_ack_to(syn: &[u8], guest_isn: u32) -> Vec<u8> {
        let s = tcp_segment(syn).unwrap();
        tcp_frame(
            (s.macs[1], s.macs[0]),
            (s.addrs[1], s.ports[1]),
            (s.addrs[0], s.ports[0]),
            guest_isn,
            s.seq.wrapping_add(1),
            TCP_SYN | TCP_ACK,
            65480,
            &[2, 4, 0xff, 0xc8, 1, 3, 3, 7],
        )
    }

    /// Whether `frame` is a pure ACK completing the handshake of `syn_ack`, with valid
    /// checksums; its window.
    pub fn acks_handshake(frame: &[u8], syn_ack: &[u8]) -> Option<u16> {
        let a = tcp_segment(frame)?;
        let s = tcp_segment(syn_ack)?;
        let ip = &frame[ETH_HEADER..ETH_HEADER + 20];
        let tcp = &frame[ETH_HEADER + 20..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(tcp);
        let valid = checksum(ip) == 0 && checksum(&pseudo) == 0;
        let matches = a.macs == [s.macs[1], s.macs[0]]
            && a.addrs == [s.addrs[1], s.addrs[0]]
            && a.ports == [s.ports[1], s.ports[0]]
            && a.seq == s.ack
            && a.ack == s.seq.wrapping_add(1)
            && a.flags == TCP_ACK
            && tcp.len() == 20;
        (valid && matches).then_some(a.window)
    }

    /// The ACK `frame` (from the guest) calls for, once due.
    fn answer(h: &mut HandshakeAcks, frame: &[u8]) -> Option<Vec<u8>> {
        let now = Instant::now();
        if !h.from_guest(frame, now) {
            return None;
        }
        assert!(h.take_due(now).is_none(), "not before the delay");
        assert_eq!(h.next_due(), Some(now + ACK_DELAY));
        h.take_due(now + ACK_DELAY)
    }

    fn passt_syn(port: u16, isn: u32) -> Vec<u8> {
        tcp_frame(
            (PASST_MAC, GUEST_MAC),
            (GATEWAY, port),
            (GUEST, 22),
            isn,
            0,
            TCP_SYN,
            65535,
            &[2, 4, 0xf0, 0, 1, 3, 3, 8],
        )
    }

    #[test]
    fn the_guests_syn_ack_to_passts_syn_gets_the_final_ack() {
        let mut h = HandshakeAcks::default();
        let syn = passt_syn(48732, 157_634_302);
        h.from_passt(&syn);
        let syn_ack = syn_ack_to(&syn, 1_247_939_367);
        let ack = answer(&mut h, &syn_ack).expect("the handshake's ACK");
        assert_eq!(ack.len(), ACK_FRAME_LEN);
        // 65535 in units of 2^8 (both sides scale).
        assert_eq!(acks_handshake(&ack, &syn_ack), Some(255));
        // Once: a retransmitted SYN,ACK (passt is established by now) gets nothing more.
        assert!(answer(&mut h, &syn_ack).is_none());
    }

    #[test]
    fn only_a_matching_syn_ack_is_answered() {
        let mut h = HandshakeAcks::default();
        // No SYN from passt seen.
        let syn = passt_syn(40000, 1000);
        assert!(answer(&mut h, &syn_ack_to(&syn, 5)).is_none());
        h.from_passt(&syn);
        // Acknowledging another sequence number, another port.
        let mut wrong_ack = syn_ack_to(&syn, 5);
        wrong_ack[ETH_HEADER + 20 + 11] ^= 1;
        assert!(answer(&mut h, &wrong_ack).is_none());
        assert!(answer(&mut h, &syn_ack_to(&passt_syn(40001, 1000), 5)).is_none());
        // Without window scaling on the guest's side the window is unscaled.
        let plain = tcp_frame(
            (GUEST_MAC, PASST_MAC),
            (GUEST, 22),
            (GATEWAY, 40000),
            5,
            1001,
            TCP_SYN | TCP_ACK,
            64240,
            &[2, 4, 5, 0xb4],
        );
        let ack = answer(&mut h, &plain).unwrap();
        assert_eq!(acks_handshake(&ack, &plain), Some(65535));
        // passt gave up (FIN after its SYN timeout): a late SYN,ACK is not answered.
        let syn = passt_syn(40002, 7);
        h.from_passt(&syn);
        h.from_passt(&tcp_frame(
            (PASST_MAC, GUEST_MAC),
            (GATEWAY, 40002),
            (GUEST, 22),
            8,
            0,
            TCP_FIN | TCP_ACK,
            256,
            &[],
        ));
        assert!(answer(&mut h, &syn_ack_to(&syn, 9)).is_none());
        // Not TCP, truncated: ignored.
        h.from_passt(&syn[..30]);
        assert!(answer(&mut h, &syn[..40]).is_none());
        assert!(answer(&mut h, &[0u8; 60]).is_none());
    }

    #[test]
    fn a_handshake_passt_completes_itself_gets_no_ack() {
        let mut h = HandshakeAcks::default();
        let syn = passt_syn(41000, 77);
        h.from_passt(&syn);
        let syn_ack = syn_ack_to(&syn, 500);
        let now = Instant::now();
        assert!(h.from_guest(&syn_ack, now));
        // passt's first data (a host client that spoke first) completes it.
        h.from_passt(&tcp_frame(
            (PASST_MAC, GUEST_MAC),
            (GATEWAY, 41000),
            (GUEST, 22),
            78,
            501,
            TCP_ACK,
            256,
            &[],
        ));
        assert!(h.take_due(now + ACK_DELAY).is_none());
        assert_eq!(h.next_due(), None);
    }

    #[test]
    fn open_handshakes_are_bounded() {
        let mut h = HandshakeAcks::default();
        for port in 0..(MAX_OPEN as u16 + 10) {
            h.from_passt(&passt_syn(30000 + port, u32::from(port)));
        }
        assert_eq!(h.open.len(), MAX_OPEN);
        let newest = passt_syn(30000 + MAX_OPEN as u16 + 9, u32::from(MAX_OPEN as u16 + 9));
        assert!(answer(&mut h, &syn_ack_to(&newest, 1)).is_some());
        assert!(answer(&mut h, &syn_ack_to(&passt_syn(30000, 0), 1)).is_none());
    }
}
