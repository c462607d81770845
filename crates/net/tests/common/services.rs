//! Host-side services for the NAT tests: a DNS server that knows one name, a udhcpc
//! script, deterministic data streams.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub const TEST_NAME: &str = "vessel-test.example";
pub const TEST_ADDR: [u8; 4] = [203, 0, 113, 7];

/// A DNS server on `addr` answering A queries for [`TEST_NAME`]; stops when dropped.
pub struct DnsServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // Question: labels, then type and class.
    let mut at = 12;
    let mut name = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        name.push(String::from_utf8_lossy(query.get(at..at + len)?).to_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    query.get(..question_end)?;
    let known = name.join(".") == TEST_NAME;
    let mut r = query[..question_end].to_vec();
    r[2] = 0x81; // response, recursion desired
    r[3] = if known { 0x80 } else { 0x83 }; // recursion available, NXDOMAIN if unknown
    r[6..8].copy_from_slice(&u16::from(known && qtype == 1).to_be_bytes());
    r[8..12].fill(0);
    if known && qtype == 1 {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&TEST_ADDR);
    }
    Some(r)
}

impl DnsServer {
    pub fn start(addr: &str) -> Self {
        let sock = UdpSocket::bind(addr).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if let Some(r) = answer(&buf[..n]) {
                        let _ = sock.send_to(&r, from);
                    }
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("vessel-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A udhcpc script that configures the interface from the lease and writes
/// `ip router dns` to `lease`.
pub fn udhcpc_script(dir: &Path) -> (PathBuf, PathBuf) {
    let script = dir.join("udhcpc.sh");
    let lease = dir.join("lease");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  bound|renew)\n    busybox ip addr flush dev \"$interface\"\n    busybox ip addr add \"$ip/$mask\" dev \"$interface\"\n    busybox ip route add default via \"$router\"\n    echo \"$ip $router $dns\" > {}\n    ;;\nesac\nexit 0\n",
            lease.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, lease)
}

/// The `i`-th byte of the deterministic test stream.
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// A TCP port free on the host's loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A host connection to 127.0.0.1:`host_port` (forwarded by the NAT) reaches a
/// `busybox nc -l` on `guest_port` in `ns`, which receives the line sent.
pub fn assert_forward_reaches(ns: &super::Netns, host_port: u16, guest_port: u16) {
    use std::io::Write;
    let listener = ns.spawn(&format!("busybox nc -l -p {guest_port}"));
    assert!(super::eventually(10, || ns
        .sh("ss -ltn")
        .contains(&format!(":{guest_port}"))));
    let mut stream = None;
    assert!(super::eventually(10, || {
        stream = std::net::TcpStream::connect(("127.0.0.1", host_port)).ok();
        stream.is_some()
    }));
    let mut stream = stream.unwrap();
    stream.write_all(b"hello-forward\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(stream);
    let out = listener.finish(10);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello-forward\n");
}

/// A server on the host's loopback that reads one connection to its end: its port, and
/// what it received.
pub fn host_tcp_reader() -> (u16, std::thread::JoinHandle<String>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    });
    (port, server)
}
