//! `nat` (passt) with a real Linux network stack as the guest: a network namespace whose
//! tap is relayed to vessel's NAT backend. DHCP with busybox udhcpc, DNS through the NAT's
//! relay to the host's resolver, TCP/UDP/ICMP to the host's loopback (the gateway address
//! maps to it with `host_loopback` only, and does not by default), port forwarding into the namespace, a bulk transfer checked by sha256, a
//! peer vanishing mid-transfer.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::services::{
    assert_forward_reaches, free_port, host_tcp_reader, udhcpc_script, DnsServer, TempDir,
    TEST_NAME,
};
use common::{can_run, Netns};
use net::config::parse_forward;
use net::passt::{PasstBackend, PasstOptions, GATEWAY, GUEST_ADDR};
use net::relay::Relay;
use sha2::{Digest, Sha256};

/// Start passt in a private mount namespace where /etc/resolv.conf is `resolv`: the
/// "host's resolver" is then the test's DNS server.
fn spawn_nat(forwards: &[&str], resolv: &Path, host_loopback: bool) -> PasstBackend {
    let mut options =
        PasstOptions::new(forwards.iter().map(|f| parse_forward(f).unwrap()).collect());
    options.host_loopback = host_loopback;
    options.log_file = std::env::var("VESSEL_PASST_LOG").ok();
    let resolv = std::ffi::CString::new(resolv.as_os_str().as_bytes()).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare/mount on this short-lived thread only, with valid
            // NUL-terminated strings; the new mount namespace is private to it and to the
            // helper it starts.
            unsafe {
                assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0);
                assert_eq!(
                    libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null()
                    ),
                    0
                );
                assert_eq!(
                    libc::mount(
                        resolv.as_ptr(),
                        c"/etc/resolv.conf".as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null()
                    ),
                    0,
                    "bind resolv.conf: {}",
                    std::io::Error::last_os_error()
                );
            }
            PasstBackend::spawn(&options).unwrap()
        })
        .join()
        .unwrap()
    })
}

/// Held by the tests whose DNS server takes the host's 127.0.0.1:53.
static PORT_53: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Guest {
    ns: Netns,
    _relay: Relay,
    tmp: TempDir,
}

/// A namespace on vessel's NAT that reaches the host's loopback through the gateway
/// (`host-loopback=on`), with its DHCP lease applied.
fn nat_guest(forwards: &[&str]) -> Guest {
    nat_guest_with(forwards, true)
}

/// A namespace on vessel's NAT, with its DHCP lease applied.
fn nat_guest_with(forwards: &[&str], host_loopback: bool) -> Guest {
    let tmp = TempDir::new("nat");
    let resolv = tmp.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let nat = spawn_nat(forwards, &resolv, host_loopback);
    let ns = Netns::new();
    let tap = ns.tap("eth0");
    let relay = Relay::start(Box::new(tap), Box::new(nat)).unwrap();
    let (script, lease) = udhcpc_script(tmp.path());
    ns.sh(&format!(
        "busybox udhcpc -i eth0 -n -q -f -t 5 -T 1 -s {}",
        script.display()
    ));
    let lease = std::fs::read_to_string(&lease).unwrap();
    assert_eq!(
        lease.split_whitespace().collect::<Vec<_>>(),
        [
            GUEST_ADDR.to_string(),
            GATEWAY.to_string(),
            GATEWAY.to_string()
        ],
        "DHCP lease: address, router, DNS (the host's loopback resolver, via the gateway)"
    );
    Guest {
        ns,
        _relay: relay,
        tmp,
    }
}

const PING_GROUP_RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";

/// Lets passt's group (nogroup, 65534: passt drops to nobody when started as root) open
/// unprivileged ICMP sockets for as long as it lives, as an administrator who wants ICMP
/// through vessel's NAT sets it once; the previous range comes back on drop.
struct PingSockets(Option<String>);

impl PingSockets {
    fn allow() -> Self {
        let before = std::fs::read_to_string(PING_GROUP_RANGE).unwrap_or_default();
        let v: Vec<u32> = before
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() == 2 && v[0] <= 65534 && 65534 <= v[1] {
            return Self(None);
        }
        // Wide: passt may keep root's group or drop to nogroup, depending on how it runs.
        std::fs::write(PING_GROUP_RANGE, "0 2147483647").expect("set ping_group_range");
        Self(Some(before))
    }
}

impl Drop for PingSockets {
    fn drop(&mut self) {
        if let Some(before) = self.0.take() {
            let _ = std::fs::write(PING_GROUP_RANGE, before);
        }
    }
}

/// The host's first global IPv4 address.
fn host_address() -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let cidr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)?;
    Some(cidr.split('/').next()?.to_owned())
}

#[test]
fn nat_dhcp_dns_tcp_udp_icmp_and_forwarding() {
    if !can_run(&[("passt", "passt"), ("python3", "python3")]) {
        return;
    }
    let _port53 = PORT_53.lock().unwrap_or_else(|e| e.into_inner());
    let _dns = DnsServer::start("127.0.0.1:53");
    // Before passt starts: it checks for ping sockets once.
    let _ping = PingSockets::allow();
    let fwd_port = free_port();
    let g = nat_guest(&[&format!("tcp:127.0.0.1:{fwd_port}-:8022")]);

    // DNS: the guest asks the server DHCP gave it, the host's resolver answers.
    let out = g.ns.sh(&format!("busybox nslookup {TEST_NAME} {GATEWAY}"));
    assert!(out.contains("203.0.113.7"), "nslookup said: {out}");

    // TCP to a server on the host's loopback, through the gateway address.
    let (port, server) = host_tcp_reader();
    g.ns.sh(&format!(
        "echo hello-tcp | busybox nc -w 3 {GATEWAY} {port}"
    ));
    assert_eq!(server.join().unwrap(), "hello-tcp\n");

    // UDP likewise.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let uport = udp.local_addr().unwrap().port();
    // (busybox nc has no UDP mode; the DNS query above was UDP too.)
    g.ns.sh(&format!(
        "python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'hello-udp\\n', ('{GATEWAY}', {uport}))\""
    ));
    let mut buf = [0u8; 64];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello-udp\n");

    // ICMP echo through the NAT to the host's own address (this passt maps the gateway
    // address to the host's loopback for TCP and UDP only). passt uses unprivileged ping
    // sockets, which the host's net.ipv4.ping_group_range must allow (`_ping` above).
    match host_address() {
        Some(addr) => {
            g.ns.sh(&format!("busybox ping -c 1 -W 3 {addr}"));
        }
        None => eprintln!("ICMP part skipped: the host has no global IPv4 address"),
    }

    // Port forwarding: host 127.0.0.1:fwd_port reaches a listener in the guest.
    assert_forward_reaches(&g.ns, fwd_port, 8022);
}

/// The guest is hostile: by default the gateway address does not lead to the host's
/// loopback, so a service listening on 127.0.0.1 stays out of the guest's reach; DNS
/// through the gateway still works.
#[test]
fn nat_keeps_host_loopback_from_the_guest_by_default() {
    if !can_run(&[("passt", "passt")]) {
        return;
    }
    let _port53 = PORT_53.lock().unwrap_or_else(|e| e.into_inner());
    let _dns = DnsServer::start("127.0.0.1:53");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let g = nat_guest_with(&[], false);
    let out = g.ns.sh(&format!(
        "echo secret | busybox nc -w 3 {GATEWAY} {port} && echo CONNECTED || echo REFUSED"
    ));
    assert!(
        out.contains("REFUSED"),
        "guest reached host loopback: {out}"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the host's loopback listener got a connection from the guest"
    );
    let out = g.ns.sh(&format!("busybox nslookup {TEST_NAME} {GATEWAY}"));
    assert!(out.contains("203.0.113.7"), "nslookup said: {out}");
}

/// Bytes of the bulk transfers (VESSEL_NET_BULK_MIB, default 1024).
fn bulk_bytes() -> u64 {
    std::env::var("VESSEL_NET_BULK_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024u64)
        << 20
}

#[test]
fn nat_bulk_transfers_arrive_intact() {
    if !can_run(&[("passt", "passt"), ("sha256sum", "coreutils")]) {
        return;
    }
    let g = nat_guest(&[]);
    let total = bulk_bytes();

    // Host → guest: a deterministic stream, hashed on both ends.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut hash = Sha256::new();
        let mut chunk = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        while sent < total {
            let n = (total - sent).min(chunk.len() as u64) as usize;
            for b in chunk[..n].chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let bytes = state.to_le_bytes();
                b.copy_from_slice(&bytes[..b.len()]);
            }
            s.write_all(&chunk[..n]).unwrap();
            hash.update(&chunk[..n]);
            sent += n as u64;
        }
        format!("{:x}", hash.finalize())
    });
    let start = Instant::now();
    // nc's stdin stays open (a FIFO opened read-write never ends): the guest does not
    // half-close while data flows in.
    let fifo = g.tmp.path().join("stdin");
    let out = g.ns.sh(&format!(
        "busybox mkfifo {0} && busybox nc {GATEWAY} {port} 0<>{0} | sha256sum",
        fifo.display()
    ));
    let secs = start.elapsed().as_secs_f64();
    let sent_hash = server.join().unwrap();
    assert_eq!(out.split_whitespace().next(), Some(sent_hash.as_str()));
    eprintln!(
        "host -> guest: {} MiB in {secs:.1} s ({:.0} MiB/s)",
        total >> 20,
        (total >> 20) as f64 / secs
    );
}

/// Guest → host bulk upload. Ignored: Debian 12's passt (0.0~git20230309) stalls or
/// resets long uploads from the guest — reproduced without vessel, with passt's own tap
/// mode (`scripts/passt-upload-repro.sh`); see docs/networking.md.
#[test]
#[ignore = "Debian 12's passt stalls or resets long guest uploads, also without vessel (scripts/passt-upload-repro.sh)"]
fn nat_bulk_upload_arrives_intact() {
    if !can_run(&[("passt", "passt"), ("sha256sum", "coreutils")]) {
        return;
    }
    let g = nat_guest(&[]);
    let total = bulk_bytes();
    // Guest → host.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut hash = Sha256::new();
        let mut chunk = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while got < total {
            let n = s.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            hash.update(&chunk[..n]);
            got += n as u64;
        }
        (got, format!("{:x}", hash.finalize()))
    });
    let mib = total >> 20;
    let start = Instant::now();
    // The guest sends `yes`'s output; its hash is computed in the guest too. nc's input
    // stays open after the data (the host closes once it has it all): passt 2023-03
    // drops data still in flight when the guest half-closes (see docs/networking.md).
    let out = g.ns.sh(&format!(
        "{{ busybox yes vessel-bulk-0123456789 | head -c {mib}M; exec busybox sleep 120; }} 2>/dev/null \
           | busybox nc {GATEWAY} {port} >/dev/null 2>&1 & wait $!; \
         busybox yes vessel-bulk-0123456789 | head -c {mib}M | sha256sum"
    ));
    let secs = start.elapsed().as_secs_f64();
    let (got, hash) = server.join().unwrap();
    assert_eq!(got, total);
    assert_eq!(out.split_whitespace().next(), Some(hash.as_str()));
    eprintln!(
        "guest -> host: {mib} MiB in {secs:.1} s ({:.0} MiB/s)",
        mib as f64 / secs
    );
}

#[test]
fn nat_survives_a_peer_vanishing_mid_transfer() {
    if !can_run(&[("passt", "passt")]) {
        return;
    }
    let g = nat_guest(&[]);
    // The host peer resets the connection after a little data.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0;
        while got < (1 << 20) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        // SO_LINGER 0: close with a reset.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt with a valid linger struct on a socket we own.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            )
        };
        drop(s);
        listener
    });
    let out = g.ns.run(&format!(
        "busybox timeout 20 sh -c 'head -c 64M /dev/zero | busybox nc {GATEWAY} {port}'"
    ));
    let listener = server.join().unwrap();
    let _ = out;
    // The NAT still works: a fresh connection goes through.
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    });
    g.ns.sh(&format!(
        "echo still-here | busybox nc -w 3 {GATEWAY} {port}"
    ));
    assert_eq!(server.join().unwrap(), "still-here\n");
}

#[test]
fn nat_survives_a_syn_flood_to_closed_ports() {
    if !can_run(&[("passt", "passt"), ("python3", "python3")]) {
        return;
    }
    let g = nat_guest(&[]);
    // 5000 SYNs to ports nobody listens on (each socket closed right after its SYN).
    let start = Instant::now();
    g.ns.sh(&format!(
        "python3 -c \"
import socket
for i in range(5000):
    s = socket.socket(); s.setblocking(False)
    s.connect_ex(('{GATEWAY}', 20000 + i % 5000)); s.close()
\""
    ));
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "the flood is bounded"
    );
    let (port, server) = host_tcp_reader();
    g.ns.sh(&format!(
        "echo after-flood | busybox nc -w 5 {GATEWAY} {port}"
    ));
    assert_eq!(server.join().unwrap(), "after-flood\n");
}
