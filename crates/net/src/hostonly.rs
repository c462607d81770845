//! `hostonly:NAME`: a tap on the host-only bridge ([`crate::bridge::hostonly`]) plus a
//! DHCP server for the VM, as VirtualBox's host-only networks have one: the guest's
//! DHCPDISCOVER/REQUEST is answered inside the backend (it never reaches the bridge) with
//! the address the VM leased from `$RUNTIME/hostonly/NAME/leases/` (192.168.56.101 …
//! 192.168.56.254, sticky per MAC, see [`crate::lease`]), the host's 192.168.56.1 as the
//! server, no default route (nothing is routed beyond the host). Everything else goes to
//! and comes from the tap, offloads included.

use std::collections::VecDeque;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use virtio::net::{GuestOffloads, NET_HDR_LEN};

use crate::bridge::{BridgeError, HOSTONLY_HOST_ADDR, HOSTONLY_PREFIX_LEN};
use crate::dhcp::{self, DhcpConfig};
use crate::lease::{Lease, LeaseError, LeaseRange};
use crate::pollset::{poll_set, RoomWatch};
use crate::switch::runtime_dir;
use crate::tap::TapBackend;
use crate::Backend;

/// Addresses handed to VMs: VirtualBox's host-only DHCP range.
pub const RANGE: LeaseRange = LeaseRange {
    network: [192, 168, 56],
    first: 101,
    last: 254,
};
/// The MAC the DHCP replies come from (locally administered).
const SERVER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x56, 0x00, 0x01];
const LEASE_SECS: u32 = 86_400;
/// Replies waiting for the guest, at most (a guest flooding DISCOVERs loses the excess).
const MAX_PENDING: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum HostOnlyError {
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error("host-only address: {0}")]
    Lease(#[from] LeaseError),
    #[error("setting up the host-only NIC's poll set: {0}")]
    Poll(#[source] io::Error),
}

/// The lease directory of host-only network `name`.
pub fn lease_dir(name: &str) -> PathBuf {
    runtime_dir().join("hostonly").join(name).join("leases")
}

/// A VM's NIC on a host-only network.
pub struct HostOnlyBackend {
    tap: TapBackend,
    lease: Lease,
    dhcp: DhcpConfig,
    /// DHCP replies for the guest, delivered before the tap's frames.
    replies: VecDeque<Vec<u8>>,
    /// Readable while `replies` is not empty.
    wake: OwnedFd,
    epoll: OwnedFd,
    room: RoomWatch,
}

impl HostOnlyBackend {
    /// Join host-only network `name` (its bridge is created when missing) with a VM whose
    /// MAC is `mac` (if known).
    pub fn join(name: &str, mac: Option<[u8; 6]>) -> Result<Self, HostOnlyError> {
        let tap = crate::bridge::hostonly(name)?;
        Self::with_tap(tap, &lease_dir(name), mac)
    }

    /// Serve DHCP from leases in `dir` in front of `tap` (a port of a host-only bridge).
    pub fn with_tap(
        tap: TapBackend,
        dir: &Path,
        mac: Option<[u8; 6]>,
    ) -> Result<Self, HostOnlyError> {
        let lease = Lease::acquire(dir, RANGE, mac)?;
        // SAFETY: eventfd with valid flags; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(HostOnlyError::Poll(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh fd owned by nobody else.
        let wake = unsafe { OwnedFd::from_raw_fd(raw) };
        let epoll = poll_set(&[tap.as_raw_fd(), wake.as_raw_fd()]).map_err(HostOnlyError::Poll)?;
        let room = RoomWatch::new(tap.as_raw_fd());
        Ok(Self {
            tap,
            lease,
            dhcp: DhcpConfig {
                server: HOSTONLY_HOST_ADDR,
                server_mac: SERVER_MAC,
                prefix_len: HOSTONLY_PREFIX_LEN,
                router: None,
                lease_secs: LEASE_SECS,
            },
            replies: VecDeque::new(),
            wake,
            epoll,
            room,
        })
    }

    /// The address the guest's DHCP lease gives it.
    pub fn guest_addr(&self) -> Ipv4Addr {
        self.lease.addr()
    }

    /// The tap on the bridge.
    pub fn tap(&self) -> &TapBackend {
        &self.tap
    }

    /// Answer `frame` if it is a DHCP request; true when it was one (and is consumed).
    fn answer_dhcp(&mut self, frame: &[u8]) -> bool {
        let Some(msg) = dhcp::parse_client_message(frame) else {
            return false;
        };
        if self.replies.len() < MAX_PENDING {
            self.replies
                .push_back(dhcp::reply(&self.dhcp, &msg, self.lease.addr()));
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to our eventfd.
            unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
        true
    }

    /// The next pending reply into `buf`, clearing the wake-up when none is left.
    fn take_reply(&mut self, buf: &mut [u8]) -> Option<usize> {
        let reply = self.replies.pop_front()?;
        if self.replies.is_empty() {
            let mut count = [0u8; 8];
            // SAFETY: reads 8 bytes into a live buffer from our non-blocking eventfd.
            unsafe { libc::read(self.wake.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        }
        let n = reply.len().min(buf.len());
        buf[..n].copy_from_slice(&reply[..n]);
        Some(n)
    }

    fn sent(&mut self, accepted: io::Result<bool>) -> io::Result<bool> {
        let accepted = accepted?;
        self.room.update(&self.epoll, !accepted)?;
        Ok(accepted)
    }
}

impl Backend for HostOnlyBackend {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if let Some(n) = self.take_reply(buf) {
            return Ok(Some(n));
        }
        self.tap.recv(buf)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        if self.answer_dhcp(frame) {
            return Ok(true);
        }
        let accepted = self.tap.send(frame);
        self.sent(accepted)
    }

    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn offloads(&self) -> bool {
        self.tap.offloads()
    }

    fn recv_with_header(
        &mut self,
        header: &mut [u8; NET_HDR_LEN],
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        if let Some(n) = self.take_reply(buf) {
            header.fill(0);
            return Ok(Some(n));
        }
        self.tap.recv_with_header(header, buf)
    }

    fn send_with_header(&mut self, header: &[u8; NET_HDR_LEN], frame: &[u8]) -> io::Result<bool> {
        if self.answer_dhcp(frame) {
            return Ok(true);
        }
        let accepted = self.tap.send_with_header(header, frame);
        self.sent(accepted)
    }

    fn set_guest_offloads(&mut self, offloads: GuestOffloads) -> io::Result<()> {
        self.tap.set_guest_offloads(offloads)
    }
}
