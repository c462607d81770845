//! `nat`: rootless user-mode networking by Debian's `passt` as a helper process, talking
//! QEMU's stream protocol over a socketpair (`passt --fd`). passt provides the gateway,
//! DHCP, TCP/UDP/ICMP through host sockets and port forwarding. DNS: DHCP hands out the
//! host's resolvers; a loopback resolver (e.g. 127.0.0.1) is handed out as the gateway
//! address, whose port 53 passt relays to it.
//!
//! The guest is hostile: by default the gateway address does not lead to the host's
//! loopback (`--no-map-gw`), so a guest cannot reach the host's local services; a NIC
//! opts in with `host-loopback=on`. Forwards without a host address listen on 127.0.0.1.
//!
//! The backend completes the TCP handshakes of forwarded connections itself when passt
//! leaves them open (see [`crate::handshake`]): otherwise a guest server that speaks
//! first (sshd) never gets the connection.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::config::{Forward, Protocol};
use crate::handshake::HandshakeAcks;
use crate::pollset::{poll_set, RoomWatch};
use crate::stream::StreamBackend;
use crate::Backend;

/// The guest's side of the NAT network, VirtualBox's defaults.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const PREFIX_LEN: u8 = 24;
/// The MTU of the NAT's wire, as QEMU+passt use it: a guest that takes VIRTIO_NET_F_MTU
/// moves bulk data in 64 KiB frames instead of 1500-byte ones.
pub const MTU: u16 = 65520;
/// The fd number the helper finds its end of the socketpair at.
const CHILD_FD: RawFd = 3;

#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    #[error("nat mode needs passt (Debian package `passt`): {0}")]
    Spawn(#[source] io::Error),
    #[error("creating the socketpair to passt: {0}")]
    Socket(#[source] io::Error),
    #[error("forward to guest address {0} is not supported: this NIC forwards to its guest's DHCP address {1}")]
    GuestAddress(Ipv4Addr, Ipv4Addr),
}

/// How to run passt.
#[derive(Debug, Clone)]
pub struct PasstOptions {
    pub program: String,
    pub forwards: Vec<Forward>,
    /// The address passt hands the guest by DHCP and forwards ports to.
    pub guest_addr: Ipv4Addr,
    /// Log file for passt's messages (None: quiet).
    pub log_file: Option<String>,
    /// Map the gateway address to the host's loopback (off: `--no-map-gw`).
    pub host_loopback: bool,
}

impl PasstOptions {
    pub fn new(forwards: Vec<Forward>) -> Self {
        Self {
            program: "passt".into(),
            forwards,
            guest_addr: GUEST_ADDR,
            log_file: None,
            host_loopback: false,
        }
    }

    fn args(&self) -> Result<Vec<String>, PasstError> {
        let guest_addr = self.guest_addr.to_string();
        let mtu = MTU.to_string();
        let mut args: Vec<String> = [
            "--foreground",
            "--one-off",
            "--ipv4-only",
            "--fd",
            "3",
            "--address",
            &guest_addr,
            "--netmask",
            "24",
            "--gateway",
            "10.0.2.2",
            "--mtu",
            &mtu,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match &self.log_file {
            Some(path) => args.extend(["--log-file".into(), path.clone()]),
            None => args.push("--quiet".into()),
        }
        if !self.host_loopback {
            args.extend(no_map_gw_args());
        }
        for f in &self.forwards {
            if let Some(addr) = f.guest_addr.filter(|&a| a != self.guest_addr) {
                return Err(PasstError::GuestAddress(addr, self.guest_addr));
            }
            let flag = match f.protocol {
                Protocol::Tcp => "-t",
                Protocol::Udp => "-u",
            };
            let spec = match f.host_addr {
                Some(a) => format!("{a}/{}:{}", f.host_port, f.guest_port),
                None => format!("{}/{}:{}", Ipv4Addr::LOCALHOST, f.host_port, f.guest_port),
            };
            args.extend([flag.into(), spec]);
        }
        Ok(args)
    }
}

/// passt's arguments that keep the guest away from the host's loopback, read where the
/// helper starts (its mount namespace decides what /etc/resolv.conf is).
fn no_map_gw_args() -> Vec<String> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let mut args = vec!["--no-map-gw".to_string()];
    args.extend(dns_args(
        &read("/etc/resolv.conf"),
        &read("/run/systemd/resolve/resolv.conf"),
    ));
    args
}

/// The IPv4 nameservers of a resolv.conf text.
fn nameservers(resolv: &str) -> Vec<Ipv4Addr> {
    resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

/// DNS for a guest kept off the host's loopback. passt drops loopback resolvers under
/// `--no-map-gw`: if the host has only those, hand out systemd-resolved's upstream
/// servers when there are any, else the gateway address, whose UDP port 53 passt then
/// relays to the host's resolver on 127.0.0.1 (and nothing else of the loopback).
fn dns_args(resolv: &str, resolved_upstream: &str) -> Vec<String> {
    let servers = nameservers(resolv);
    if servers.is_empty() || servers.iter().any(|a| !a.is_loopback()) {
        return Vec::new();
    }
    let upstream: Vec<Ipv4Addr> = nameservers(resolved_upstream)
        .into_iter()
        .filter(|a| !a.is_loopback())
        .collect();
    if !upstream.is_empty() {
        return upstream
            .iter()
            .flat_map(|a| ["--dns".to_string(), a.to_string()])
            .collect();
    }
    let gw = GATEWAY.to_string();
    vec!["--dns".into(), gw.clone(), "--dns-forward".into(), gw]
}

/// Bytes passt may have in flight towards the VMM. passt drops what its socket does not
/// take and leaves it to TCP to retransmit (after its ACK timeout, a second): with 64 KiB
/// frames the default buffer (208 KiB) holds three, so a burst would stall the stream.
const SEND_BUFFER: libc::c_int = 8 << 20;

/// Give passt's end of the socket pair a send buffer of [`SEND_BUFFER`]: forced beyond
/// `net.core.wmem_max` when we may (CAP_NET_ADMIN), else as far as that limit allows.
fn grow_send_buffer(fd: RawFd) {
    for option in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: setsockopt reads one c_int from a live local for the call.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&SEND_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

/// A NAT backend: frames go to a passt process, which dies with it.
pub struct PasstBackend {
    stream: StreamBackend,
    child: Child,
    handshakes: HandshakeAcks,
    /// Expires when a handshake ACK is due.
    timer: OwnedFd,
    /// The socket and `timer`: the fd the VMM polls. Readable when either has input, or
    /// when passt can take more after it refused a frame.
    epoll: OwnedFd,
    room: RoomWatch,
}

impl PasstBackend {
    pub fn spawn(options: &PasstOptions) -> Result<Self, PasstError> {
        let args = options.args()?;
        let (ours, theirs) = UnixStream::pair().map_err(PasstError::Socket)?;
        let theirs_fd = theirs.as_raw_fd();
        grow_send_buffer(theirs_fd);
        let mut cmd = Command::new(&options.program);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec; they
        // touch no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                if theirs_fd == CHILD_FD {
                    let flags = libc::fcntl(CHILD_FD, libc::F_GETFD);
                    if flags < 0
                        || libc::fcntl(CHILD_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(theirs_fd, CHILD_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(PasstError::Spawn)?;
        drop(theirs);
        let stream = StreamBackend::new(OwnedFd::from(ours)).map_err(PasstError::Socket)?;
        // SAFETY: timerfd_create with valid flags; the result is checked.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            )
        };
        if raw < 0 {
            return Err(PasstError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh fd owned by nobody else.
        let timer = unsafe { OwnedFd::from_raw_fd(raw) };
        let epoll =
            poll_set(&[stream.as_raw_fd(), timer.as_raw_fd()]).map_err(PasstError::Socket)?;
        let room = RoomWatch::new(stream.as_raw_fd());
        Ok(Self {
            stream,
            child,
            handshakes: HandshakeAcks::default(),
            timer,
            epoll,
            room,
        })
    }

    /// Note a frame for passt: a SYN,ACK of the guest may call for an ACK later.
    fn watch_sent(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.handshakes.from_guest(frame, Instant::now()) {
            self.arm_timer()?;
        }
        Ok(())
    }

    /// Let the timer fire when the next ACK is due (or not at all).
    fn arm_timer(&mut self) -> io::Result<()> {
        let left = self
            .handshakes
            .next_due()
            .map(|due| due.saturating_duration_since(Instant::now()));
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut spec = libc::itimerspec {
            it_interval: zero,
            it_value: zero,
        };
        if let Some(left) = left {
            // A zero value disarms: at least a nanosecond.
            spec.it_value.tv_sec = left.as_secs() as libc::time_t;
            spec.it_value.tv_nsec = libc::c_long::from(left.subsec_nanos().max(1));
        }
        // SAFETY: a valid itimerspec for the call on our timerfd; no old value asked.
        if unsafe { libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) }
            < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// An ACK that is due into `buf`; rearms the timer for the next one.
    fn take_due_ack(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if self.handshakes.next_due().is_none() {
            return Ok(None);
        }
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into a live buffer from our non-blocking timerfd.
        unsafe { libc::read(self.timer.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        let ack = self.handshakes.take_due(Instant::now());
        self.arm_timer()?;
        Ok(ack.map(|ack| {
            let n = ack.len().min(buf.len());
            buf[..n].copy_from_slice(&ack[..n]);
            n
        }))
    }

    /// After passt took or refused (part of) a frame: wait for room only while some waits.
    fn track_room(&mut self, done: bool) -> io::Result<bool> {
        self.room
            .update(&self.epoll, !done || self.stream.has_pending())?;
        Ok(done)
    }

    /// Whether part of a frame waits for passt to take it.
    pub fn has_pending(&self) -> bool {
        self.stream.has_pending()
    }

    /// The helper's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PasstBackend {
    fn drop(&mut self) {
        // passt runs --one-off: closing our end ends it even where the kill is refused (a
        // confined VMM has no CAP_KILL for a passt that dropped to another user).
        // SAFETY: shutdown on the stream's own descriptor, still open here.
        unsafe { libc::shutdown(self.stream.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Backend for PasstBackend {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // The fd is readable when passt has room for a waiting tail too: send it on, for
        // a caller that only reads when the fd is.
        if self.stream.has_pending() {
            if let Ok(drained) = self.stream.flush() {
                self.track_room(drained)?;
            }
        }
        if let Some(n) = self.stream.recv(buf)? {
            self.handshakes.from_passt(&buf[..n]);
            return Ok(Some(n));
        }
        self.take_due_ack(buf)
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        let accepted = self.stream.send(frame)?;
        if accepted {
            self.watch_sent(frame)?;
        }
        self.track_room(accepted)
    }
    fn flush(&mut self) -> io::Result<bool> {
        let drained = self.stream.flush()?;
        self.track_room(drained)
    }
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
    fn mtu(&self) -> Option<u16> {
        Some(MTU)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_forward;

    #[test]
    fn forwards_become_passt_port_specs() {
        let opts = PasstOptions::new(vec![
            parse_forward("tcp:127.0.0.1:2222-:22").unwrap(),
            parse_forward("udp::5353-10.0.2.15:53").unwrap(),
        ]);
        let args = opts.args().unwrap();
        let tail: Vec<&str> = args[args.len() - 4..].iter().map(|s| s.as_str()).collect();
        assert_eq!(tail, ["-t", "127.0.0.1/2222:22", "-u", "127.0.0.1/5353:53"]);
        let bad = PasstOptions::new(vec![parse_forward("tcp::1-10.0.2.99:2").unwrap()]);
        assert!(matches!(bad.args(), Err(PasstError::GuestAddress(..))));
    }

    fn passt_installed() -> bool {
        let found = Command::new("passt")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            eprintln!("SKIPPED: passt (apt-get install passt) is not installed");
        }
        found
    }

    /// The next frame from `backend` that `want` accepts, waiting on its fd until
    /// `deadline`.
    fn recv_until(
        backend: &mut PasstBackend,
        deadline: std::time::Instant,
        want: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; virtio::net::MAX_FRAME_LEN];
        loop {
            while let Some(n) = backend.recv(&mut buf).unwrap() {
                if want(&buf[..n]) {
                    return Some(buf[..n].to_vec());
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut p = libc::pollfd {
                fd: backend.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the call.
            unsafe { libc::poll(&mut p, 1, left.as_millis().min(100) as i32) };
        }
    }

    #[test]
    fn a_forwarded_connection_is_established_before_the_guest_speaks() {
        use crate::handshake::tests::{acks_handshake, syn_ack_to, GUEST_MAC};
        use std::time::{Duration, Instant};
        if !passt_installed() {
            return;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let forward = parse_forward(&format!("tcp:127.0.0.1:{port}-:22")).unwrap();
        let mut passt = PasstBackend::spawn(&PasstOptions::new(vec![forward])).unwrap();
        // The guest shows up (passt learns its MAC): an ARP request for the gateway.
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&GUEST_MAC);
        arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&GUEST_MAC);
        arp.extend_from_slice(&GUEST_ADDR.octets());
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&GATEWAY.octets());
        let deadline = Instant::now() + Duration::from_secs(10);
        let connected = loop {
            // passt may still be starting up (binding the forwarded port).
            assert!(passt.send(&arp).unwrap());
            if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                break s;
            }
            assert!(Instant::now() < deadline, "passt never listened on {port}");
            std::thread::sleep(Duration::from_millis(50));
        };
        // A host client that waits for the server to speak first (as an SSH banner probe).
        let is_syn = |f: &[u8]| f.len() >= 54 && f[12..14] == [8, 0] && f[47] == 0x02;
        let syn = recv_until(&mut passt, deadline, is_syn).expect("passt's SYN to the guest");
        let syn_ack = syn_ack_to(&syn, 0x1234_5678);
        assert!(passt.send(&syn_ack).unwrap());
        // The handshake's final ACK reaches the guest (from passt, or made by the
        // backend for a passt that sends it only with data), so its listener accepts.
        let ack = recv_until(&mut passt, Instant::now() + Duration::from_secs(3), |f| {
            acks_handshake(f, &syn_ack).is_some()
        });
        assert!(ack.is_some(), "no ACK completed the guest's handshake");
        drop(connected);
    }

    #[test]
    fn forward_without_host_address_listens_on_loopback_only() {
        let opts = PasstOptions::new(vec![parse_forward("tcp::2222-:22").unwrap()]);
        let args = opts.args().unwrap();
        let tail: Vec<&str> = args[args.len() - 2..].iter().map(|s| s.as_str()).collect();
        assert_eq!(tail, ["-t", "127.0.0.1/2222:22"]);
        let any = PasstOptions::new(vec![parse_forward("tcp:0.0.0.0:2222-:22").unwrap()]);
        assert!(any.args().unwrap().contains(&"0.0.0.0/2222:22".to_string()));
    }

    #[test]
    fn gateway_is_not_host_loopback_unless_asked() {
        let mut opts = PasstOptions::new(Vec::new());
        assert!(opts.args().unwrap().contains(&"--no-map-gw".to_string()));
        opts.host_loopback = true;
        assert!(!opts.args().unwrap().contains(&"--no-map-gw".to_string()));
    }

    #[test]
    fn dns_without_host_loopback() {
        let none: Vec<String> = Vec::new();
        assert_eq!(dns_args("nameserver 192.0.2.1\n", ""), none);
        assert_eq!(dns_args("", ""), none);
        assert_eq!(
            dns_args("nameserver 127.0.0.53\n", "nameserver 192.0.2.9\n"),
            ["--dns", "192.0.2.9"]
        );
        assert_eq!(
            dns_args("# local\nnameserver 127.0.0.1\n", ""),
            ["--dns", "10.0.2.2", "--dns-forward", "10.0.2.2"]
        );
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let mut opts = PasstOptions::new(Vec::new());
        opts.program = "/nonexistent/passt".into();
        let err = PasstBackend::spawn(&opts).err().unwrap();
        assert!(err.to_string().contains("apt") || err.to_string().contains("passt"));
    }
}
