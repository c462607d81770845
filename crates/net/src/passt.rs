//! `nat`: rootless user-mode networking by Debian's `passt` as a helper process, talking
//! QEMU's stream protocol over a socketpair (`passt --fd`). passt provides the gateway,
//! DHCP, TCP/UDP/ICMP through host sockets and port forwarding. DNS: DHCP hands out the
//! host's resolvers; a loopback resolver (e.g. 127.0.0.1) is handed out as the gateway
//! address, which passt maps to the host's loopback.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::config::{Forward, Protocol};
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
}

impl PasstOptions {
    pub fn new(forwards: Vec<Forward>) -> Self {
        Self {
            program: "passt".into(),
            forwards,
            guest_addr: GUEST_ADDR,
            log_file: None,
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
                None => format!("{}:{}", f.host_port, f.guest_port),
            };
            args.extend([flag.into(), spec]);
        }
        Ok(args)
    }
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
        Ok(Self { stream, child })
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Backend for PasstBackend {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.stream.recv(buf)
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        self.stream.send(frame)
    }
    fn flush(&mut self) -> io::Result<bool> {
        self.stream.flush()
    }
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
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
        assert_eq!(tail, ["-t", "127.0.0.1/2222:22", "-u", "5353:53"]);
        let bad = PasstOptions::new(vec![parse_forward("tcp::1-10.0.2.99:2").unwrap()]);
        assert!(matches!(bad.args(), Err(PasstError::GuestAddress(..))));
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let mut opts = PasstOptions::new(Vec::new());
        opts.program = "/nonexistent/passt".into();
        let err = PasstBackend::spawn(&opts).err().unwrap();
        assert!(err.to_string().contains("apt") || err.to_string().contains("passt"));
    }
}
