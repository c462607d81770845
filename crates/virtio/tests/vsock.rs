//! virtio-vsock through the PCI transport, with real Unix sockets on the host side:
//! guest- and host-initiated streams, credit, clean close, and a hostile driver (bad
//! headers, short and misdirected chains, credit overflow, RST floods).

mod harness;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use harness::vring::Buf;
use harness::{Driver, Setup};
use virtio::vsock::packet::{op, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use virtio::vsock::{Header, Vsock, HDR_LEN, HOST_CID, MAX_PAYLOAD, RX_QUEUE, TX_QUEUE};
use virtio::VirtioDevice;

const CID: u64 = 3;
const RX_BUF: u32 = 4096 + HDR_LEN as u32;

struct Guest {
    d: Driver,
    _dir: tempfile::TempDir,
    uds: PathBuf,
    /// Posted receive buffers: head → address.
    rx: HashMap<u16, u64>,
    tx_hdr: u64,
    tx_data: u64,
}

impl Guest {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let dev = Vsock::new(CID, &uds).unwrap();
        let mut d = Driver::plug(Box::new(dev));
        d.init(Setup::default());
        let tx_hdr = d.alloc(HDR_LEN, 0);
        let tx_data = d.alloc(MAX_PAYLOAD as usize + 4096, 0);
        Self {
            d,
            _dir: dir,
            uds,
            rx: HashMap::new(),
            tx_hdr,
            tx_data,
        }
    }

    fn post_rx(&mut self, n: usize) {
        for _ in 0..n {
            let a = self.d.alloc(RX_BUF as usize, 0xcc);
            let head = self.d.queues[RX_QUEUE].chain(&self.d.mem, &[Buf::w(a, RX_BUF)]);
            self.d.queues[RX_QUEUE].offer(&self.d.mem, head);
            self.rx.insert(head, a);
        }
    }

    /// Transmit one chain made of `bufs` and run the transmit queue.
    fn tx_chain(&mut self, bufs: &[Buf]) {
        let head = self.d.queues[TX_QUEUE].chain(&self.d.mem, bufs);
        self.d.queues[TX_QUEUE].offer(&self.d.mem, head);
        self.d.kick(TX_QUEUE as u16);
        let used = self.d.queues[TX_QUEUE].take_used(&self.d.mem);
        assert_eq!(used, vec![(u32::from(head), 0)], "chains go back at once");
    }

    fn send(&mut self, hdr: Header, payload: &[u8]) {
        self.d.mem_write(self.tx_hdr, &hdr.to_bytes());
        self.d.mem_write(self.tx_data, payload);
        let mut bufs = vec![Buf::r(self.tx_hdr, HDR_LEN as u32)];
        if !payload.is_empty() {
            bufs.push(Buf::r(self.tx_data, payload.len() as u32));
        }
        self.tx_chain(&bufs);
    }

    /// Run the receive queue (as the I/O thread does when the muxer's fd is readable) and
    /// return the packets the guest got.
    fn recv(&mut self) -> Vec<(Header, Vec<u8>)> {
        let _ = self.d.processor.process_queue(RX_QUEUE);
        let mut out = Vec::new();
        for (head, len) in self.d.queues[RX_QUEUE].take_used(&self.d.mem) {
            let addr = self.rx.remove(&(head as u16)).unwrap();
            assert!(len as usize >= HDR_LEN, "a packet is at least a header");
            let raw = self.d.read_mem(addr, len as usize);
            let hdr = Header::from_bytes(raw[..HDR_LEN].try_into().unwrap());
            assert_eq!(hdr.len as usize, len as usize - HDR_LEN);
            out.push((hdr, raw[HDR_LEN..].to_vec()));
        }
        out
    }

    /// Receive until a packet arrives (the host side works asynchronously).
    fn recv_some(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.recv_some_within(Duration::from_secs(5))
    }

    fn recv_some_within(&mut self, limit: Duration) -> Vec<(Header, Vec<u8>)> {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            let got = self.recv();
            if !got.is_empty() {
                return got;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("no packet for the guest");
    }

    fn device_stats(&self) -> String {
        format!("status {:#x}", self.d.status())
    }
}

fn pkt(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        kind: TYPE_STREAM,
        op,
        buf_alloc: 64 << 10,
        ..Header::default()
    }
}

fn rw(src_port: u32, dst_port: u32, len: usize) -> Header {
    Header {
        len: len as u32,
        ..pkt(op::RW, src_port, dst_port)
    }
}

fn read_line(s: &mut UnixStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

fn only(packets: Vec<(Header, Vec<u8>)>) -> (Header, Vec<u8>) {
    assert_eq!(packets.len(), 1, "{packets:?}");
    packets.into_iter().next().unwrap()
}

/// A guest connection from port 1000 to host port 52, accepted by a host listener.
fn guest_connection(g: &mut Guest) -> (UnixListener, UnixStream) {
    let listener = UnixListener::bind(format!("{}_52", g.uds.display())).unwrap();
    g.post_rx(8);
    g.send(pkt(op::REQUEST, 1000, 52), &[]);
    let (h, _) = only(g.recv_some());
    assert_eq!(h.op, op::RESPONSE);
    assert_eq!((h.src_cid, h.dst_cid), (HOST_CID, CID));
    assert_eq!((h.src_port, h.dst_port), (52, 1000));
    assert_eq!(h.buf_alloc, virtio::vsock::conn::CONN_BUF);
    let (host, _) = listener.accept().unwrap();
    (listener, host)
}

#[test]
fn identity_and_config() {
    let mut g = Guest::new();
    assert_eq!(g.d.probe(), (0x1af4, 0x1053));
    let mut cid = [0u8; 8];
    g.d.device_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), CID);
    assert!(Vsock::new(2, &g.uds.with_extension("x")).is_err());
    assert!(Vsock::new(u64::from(u32::MAX), &g.uds.with_extension("y")).is_err());
    assert!(
        matches!(
            Vsock::new(4, &g.uds),
            Err(virtio::vsock::VsockError::Muxer(_))
        ),
        "a live socket is not taken over"
    );
}

#[test]
fn guest_to_host_stream_both_ways_and_clean_close() {
    let mut g = Guest::new();
    let (_l, mut host) = guest_connection(&mut g);
    g.send(rw(1000, 52, 5), b"ping\n");
    assert_eq!(read_line(&mut host), "ping");
    host.write_all(b"pong\n").unwrap();
    let (h, data) = only(g.recv_some());
    assert_eq!((h.op, h.len, h.src_port, h.dst_port), (op::RW, 5, 52, 1000));
    assert_eq!(data, b"pong\n");
    assert_eq!(h.fwd_cnt, 5, "the device consumed the guest's 5 bytes");
    // The guest closes both ways: the device answers with the final RST.
    g.send(
        Header {
            flags: SHUTDOWN_RCV | SHUTDOWN_SEND,
            ..pkt(op::SHUTDOWN, 1000, 52)
        },
        &[],
    );
    let (h, _) = only(g.recv_some());
    assert_eq!(h.op, op::RST);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the host sees EOF");
}

#[test]
fn host_eof_becomes_a_shutdown() {
    let mut g = Guest::new();
    let (_l, host) = guest_connection(&mut g);
    drop(host);
    let (h, _) = only(g.recv_some());
    assert_eq!((h.op, h.flags), (op::SHUTDOWN, SHUTDOWN_SEND));
    g.send(pkt(op::RST, 1000, 52), &[]);
    assert!(g.recv().is_empty(), "no answer to an RST");
}

#[test]
fn host_data_waits_for_guest_credit() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(format!("{}_52", g.uds.display())).unwrap();
    g.post_rx(8);
    g.send(
        Header {
            buf_alloc: 6,
            ..pkt(op::REQUEST, 1000, 52)
        },
        &[],
    );
    assert_eq!(only(g.recv_some()).0.op, op::RESPONSE);
    let (mut host, _) = listener.accept().unwrap();
    host.write_all(b"0123456789").unwrap();
    let (h, data) = only(g.recv_some());
    assert_eq!(data, b"012345", "six bytes of credit");
    assert!(g.recv().is_empty());
    // The guest consumed them: the rest follows.
    g.send(
        Header {
            buf_alloc: 6,
            fwd_cnt: h.len,
            ..pkt(op::CREDIT_UPDATE, 1000, 52)
        },
        &[],
    );
    assert_eq!(only(g.recv_some()).1, b"6789");
    // A credit request is answered.
    g.send(pkt(op::CREDIT_REQUEST, 1000, 52), &[]);
    assert_eq!(only(g.recv_some()).0.op, op::CREDIT_UPDATE);
}

#[test]
fn guest_connect_without_host_listener_is_reset() {
    let mut g = Guest::new();
    g.post_rx(2);
    g.send(pkt(op::REQUEST, 1000, 99), &[]);
    let (h, _) = only(g.recv_some());
    assert_eq!((h.op, h.src_port, h.dst_port), (op::RST, 99, 1000));
    assert_eq!(g.d.status() & virtio::status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn host_connect_line_reaches_the_guest() {
    let mut g = Guest::new();
    g.post_rx(8);
    let mut host = UnixStream::connect(&g.uds).unwrap();
    host.write_all(b"CONNECT 1234\nhello").unwrap();
    let (req, _) = only(g.recv_some());
    assert_eq!(req.op, op::REQUEST);
    assert_eq!((req.src_cid, req.dst_cid), (HOST_CID, CID));
    assert_eq!(req.dst_port, 1234);
    assert!(req.src_port >= 1 << 30, "host ports start at 2^30");
    // The guest accepts: the host client gets OK and its first bytes arrive.
    g.send(pkt(op::RESPONSE, 1234, req.src_port), &[]);
    assert_eq!(read_line(&mut host), format!("OK {}", req.src_port));
    let (h, data) = only(g.recv_some());
    assert_eq!((h.op, data.as_slice()), (op::RW, &b"hello"[..]));
    g.send(rw(1234, req.src_port, 3), b"yo\n");
    assert_eq!(read_line(&mut host), "yo");
}

#[test]
fn a_connect_the_guest_never_answers_is_reset_after_the_timeout() {
    let mut g = Guest::new();
    g.post_rx(8);
    let mut host = UnixStream::connect(&g.uds).unwrap();
    host.write_all(b"CONNECT 77\n").unwrap();
    let (req, _) = only(g.recv_some());
    assert_eq!((req.op, req.dst_port), (op::REQUEST, 77));
    // The guest stays silent: after the timeout it gets a RST and the client EOF.
    let started = std::time::Instant::now();
    let (rst, _) = only(g.recv_some_within(virtio::vsock::muxer::CONNECT_TIMEOUT * 3));
    assert!(started.elapsed() >= virtio::vsock::muxer::CONNECT_TIMEOUT / 2);
    assert_eq!(
        (rst.op, rst.src_port, rst.dst_port),
        (op::RST, req.src_port, 77)
    );
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(
        host.read(&mut buf).unwrap(),
        0,
        "the client's connection is closed"
    );
    assert_eq!(g.d.status() & virtio::status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn an_answered_connect_outlives_the_timeout() {
    let mut g = Guest::new();
    g.post_rx(8);
    let mut host = UnixStream::connect(&g.uds).unwrap();
    host.write_all(b"CONNECT 78\n").unwrap();
    let (req, _) = only(g.recv_some());
    g.send(pkt(op::RESPONSE, 78, req.src_port), &[]);
    assert_eq!(read_line(&mut host), format!("OK {}", req.src_port));
    std::thread::sleep(virtio::vsock::muxer::CONNECT_TIMEOUT + Duration::from_millis(300));
    assert!(g.recv().is_empty(), "no RST for an accepted connection");
    g.send(rw(78, req.src_port, 3), b"ok\n");
    assert_eq!(read_line(&mut host), "ok");
}

#[test]
fn bad_connect_lines_are_closed() {
    let g = Guest::new();
    for line in [&b"LISTEN 5\n"[..], b"CONNECT x\n", &[b'9'; 40]] {
        let mut host = UnixStream::connect(&g.uds).unwrap();
        host.write_all(line).unwrap();
        let _ = g.d.processor.process_queue(RX_QUEUE);
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 8];
        // Closed: EOF, or a reset when bytes were left unread.
        match host.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0, "{line:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{line:?}"),
        }
    }
}

#[test]
fn guest_refused_by_host_listener_count_is_bounded() {
    // A flood of RST-worthy packets with no receive buffers queues a bounded number.
    let mut g = Guest::new();
    for i in 0..(virtio::vsock::muxer::MAX_QUEUED_RSTS as u32 + 50) {
        g.send(pkt(op::RW, i, 7), &[]);
    }
    let mut total = 0;
    loop {
        g.post_rx(64);
        let n = g.recv().len();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, virtio::vsock::muxer::MAX_QUEUED_RSTS);
}

// ---- hostile headers and chains ----

/// Send `hdr` (with `payload`) and expect exactly one RST back for it.
fn expect_rst(g: &mut Guest, hdr: Header, payload: &[u8]) {
    g.send(hdr, payload);
    let (h, _) = only(g.recv_some());
    assert_eq!(h.op, op::RST, "{hdr:?}");
    assert_eq!((h.src_port, h.dst_port), (hdr.dst_port, hdr.src_port));
}

#[test]
fn hostile_headers_get_rst() {
    let mut g = Guest::new();
    g.post_rx(16);
    expect_rst(
        &mut g,
        Header {
            kind: 2,
            ..pkt(op::REQUEST, 1, 2)
        },
        &[],
    );
    expect_rst(&mut g, pkt(0, 1, 2), &[]);
    expect_rst(&mut g, pkt(99, 1, 2), &[]);
    expect_rst(
        &mut g,
        Header {
            dst_cid: 7,
            ..pkt(op::REQUEST, 1, 2)
        },
        &[],
    );
    expect_rst(
        &mut g,
        Header {
            len: 3,
            ..pkt(op::REQUEST, 1, 2)
        },
        b"abc",
    );
    // len larger than the chain, and larger than any packet may be.
    expect_rst(&mut g, rw(1, 2, 100), &[0; 10]);
    let big = vec![0u8; MAX_PAYLOAD as usize + 1];
    expect_rst(&mut g, rw(1, 2, big.len()), &big);
    // Data on a connection that does not exist.
    expect_rst(&mut g, rw(1, 2, 4), b"data");
    assert_eq!(g.d.status() & virtio::status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn unaddressable_packets_are_dropped() {
    let mut g = Guest::new();
    g.post_rx(4);
    // Not from the guest's CID (also: a non-zero reserved upper half).
    g.send(
        Header {
            src_cid: 4,
            ..pkt(op::REQUEST, 1, 2)
        },
        &[],
    );
    g.send(
        Header {
            src_cid: CID | 1 << 32,
            ..pkt(op::REQUEST, 1, 2)
        },
        &[],
    );
    // A header split short, a chain with a device-writable buffer, an RST for nothing.
    g.tx_chain(&[Buf::r(g.tx_hdr, 20)]);
    let (h, d) = (g.tx_hdr, g.tx_data);
    g.d.mem_write(h, &pkt(op::REQUEST, 1, 2).to_bytes());
    g.tx_chain(&[Buf::r(h, HDR_LEN as u32), Buf::w(d, 16)]);
    g.send(pkt(op::RST, 1, 2), &[]);
    assert!(g.recv().is_empty());
    assert_eq!(
        g.d.status() & virtio::status::DEVICE_NEEDS_RESET,
        0,
        "{}",
        g.device_stats()
    );
}

#[test]
fn header_split_over_descriptors_is_accepted() {
    let mut g = Guest::new();
    g.post_rx(2);
    let (h, d) = (g.tx_hdr, g.tx_data);
    g.d.mem_write(h, &pkt(op::REQUEST, 1, 99).to_bytes());
    g.tx_chain(&[Buf::r(h, 10), Buf::r(h + 10, 34)]);
    assert_eq!(only(g.recv_some()).0.op, op::RST, "no listener on 99");
    let _ = d;
}

#[test]
fn small_receive_buffers_go_back_empty() {
    let mut g = Guest::new();
    let a = g.d.alloc(64, 0);
    let head = g.d.queues[RX_QUEUE].chain(&g.d.mem, &[Buf::w(a, 20)]);
    g.d.queues[RX_QUEUE].offer(&g.d.mem, head);
    let rdonly = g.d.queues[RX_QUEUE].chain(&g.d.mem, &[Buf::r(a, 64)]);
    g.d.queues[RX_QUEUE].offer(&g.d.mem, rdonly);
    g.send(pkt(op::REQUEST, 1, 99), &[]);
    let _ = g.d.processor.process_queue(RX_QUEUE);
    let used = g.d.queues[RX_QUEUE].take_used(&g.d.mem);
    assert_eq!(used, vec![(u32::from(head), 0), (u32::from(rdonly), 0)]);
    g.post_rx(1);
    assert_eq!(
        only(g.recv_some()).0.op,
        op::RST,
        "the RST waited for a usable buffer"
    );
}

#[test]
fn credit_overflow_resets_the_connection() {
    let mut g = Guest::new();
    let (_l, mut host) = guest_connection(&mut g);
    // The host does not read; the guest ignores the credit it was given.
    let chunk = vec![0x5a; MAX_PAYLOAD as usize];
    let mut rst = None;
    for _ in 0..64 {
        g.send(rw(1000, 52, chunk.len()), &chunk);
        if let Some(p) = g.recv().into_iter().find(|(h, _)| h.op == op::RST) {
            rst = Some(p);
            break;
        }
    }
    assert!(rst.is_some(), "the connection was reset");
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = Vec::new();
    host.read_to_end(&mut sink).unwrap();
    assert!(sink.len() < 64 * chunk.len(), "the host socket was closed");
}

#[test]
fn reset_closes_connections() {
    let mut g = Guest::new();
    let (_l, mut host) = guest_connection(&mut g);
    g.d.set_status(0);
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 4];
    assert_eq!(host.read(&mut b).unwrap(), 0);
    // The driver comes back: the guest's old port is free again.
    g.d.init(Setup::default());
    g.rx.clear();
    let (_l2, _host) = {
        std::fs::remove_file(format!("{}_52", g.uds.display())).unwrap();
        guest_connection(&mut g)
    };
}

#[test]
fn the_socket_file_goes_with_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let dev = Vsock::new(CID, &uds).unwrap();
    assert!(uds.exists());
    assert_eq!(dev.queue_max_sizes().len(), 3);
    drop(dev);
    assert!(!uds.exists());
}
