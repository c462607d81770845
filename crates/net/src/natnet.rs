//! `natnet:NAME`: several VMs behind one NAT, on one subnet, reaching each other —
//! VirtualBox's "NAT Network" — with no daemon.
//!
//! Each VM's NIC is a [`NatNetBackend`] made of
//! * a port on the network's switch (as `internal:NAME`, in its own directory), which
//!   carries the frames between the VMs;
//! * its own `passt` helper ([`PasstBackend`]), configured with the VM's address, which is
//!   the gateway, DHCP server and NAT towards the host for that VM alone;
//! * a lease ([`crate::lease`]): the VM's address on the subnet, from the network's
//!   `leases/` directory.
//!
//! Frames from the guest are steered: ARP requests for an address on the subnet other than
//! the gateway go to the switch only (otherwise passt, which answers ARP for every
//! address, would claim the other VMs); unicast to a MAC heard on the switch goes to the
//! switch; multicast to the switch; broadcast (DHCP, ARP for the gateway) to passt and the
//! switch; everything else to passt. Frames from both sides go to the guest.

use std::collections::HashSet;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::lease::{Lease, LeaseError, LeaseRange};
use crate::passt::{PasstBackend, PasstError, PasstOptions, GATEWAY, GUEST_ADDR, PREFIX_LEN};
use crate::pollset::{poll_set, RoomWatch};
use crate::switch::{runtime_dir, SwitchError, SwitchPort};
use crate::Backend;

/// The addresses leased: 10.0.2.15 … 10.0.2.254.
pub const RANGE: LeaseRange = LeaseRange {
    network: [10, 0, 2],
    first: 15,
    last: 254,
};
/// MACs heard on the switch remembered at most (the set starts over when full).
const MAX_PEERS: usize = 1024;
const ETH_HEADER: usize = 14;
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];

#[derive(Debug, thiserror::Error)]
pub enum NatNetError {
    #[error("natnet address: {0}")]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Switch(#[from] SwitchError),
    #[error(transparent)]
    Passt(#[from] PasstError),
    #[error("creating the natnet poll set: {0}")]
    Epoll(#[source] io::Error),
}

/// The directory of the NAT network `name`.
pub fn natnet_dir(name: &str) -> PathBuf {
    runtime_dir().join("natnet").join(name)
}

/// Whether `addr` is on the network's subnet.
fn on_subnet(addr: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - u32::from(PREFIX_LEN));
    u32::from(addr) & mask == u32::from(GUEST_ADDR) & mask
}

/// Where [`route`] sends a guest frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Nat,
    Switch,
    Both,
}

/// Where a guest frame goes: broadcast ARP for a subnet peer and multicast to the switch,
/// frames for a learned peer MAC (`peers`) to the switch, the rest to the NAT. Pure, so the
/// fuzz target `natnet_route` drives it on arbitrary guest frames.
pub fn route(frame: &[u8], peers: &HashSet<[u8; 6]>) -> Route {
    let Some(dst) = frame.get(..6) else {
        return Route::Nat;
    };
    if dst == [0xff; 6] {
        let arp_target = (frame.get(12..14) == Some(&ETHERTYPE_ARP[..]))
            .then(|| frame.get(ETH_HEADER + 24..ETH_HEADER + 28))
            .flatten();
        return match arp_target {
            Some(t) => {
                let target = Ipv4Addr::new(t[0], t[1], t[2], t[3]);
                if on_subnet(target) && target != GATEWAY {
                    Route::Switch
                } else {
                    Route::Nat
                }
            }
            None => Route::Both,
        };
    }
    if dst[0] & 1 != 0 {
        return Route::Switch;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(dst);
    if peers.contains(&mac) {
        Route::Switch
    } else {
        Route::Nat
    }
}

/// One VM's NIC on a NAT network.
pub struct NatNetBackend {
    nat: PasstBackend,
    switch: SwitchPort,
    lease: Lease,
    /// MACs heard on the switch: the other VMs.
    peers: HashSet<[u8; 6]>,
    /// Read the switch first next time (alternates, so neither side starves the other).
    switch_first: bool,
    /// Both sockets: the one fd the VMM polls. Readable when either has input, or when
    /// passt can take more after it refused a frame.
    epoll: OwnedFd,
    /// Whether the poll set waits for passt's socket to be writable.
    room: RoomWatch,
}

impl NatNetBackend {
    /// Join the NAT network `name` with a VM whose MAC is `mac` (if known).
    pub fn join(
        name: &str,
        mac: Option<[u8; 6]>,
        options: PasstOptions,
    ) -> Result<Self, NatNetError> {
        Self::join_dir(&natnet_dir(name), mac, options)
    }

    /// Join the NAT network whose state lives in `dir`. `options.guest_addr` is replaced
    /// by the leased address.
    pub fn join_dir(
        dir: &Path,
        mac: Option<[u8; 6]>,
        mut options: PasstOptions,
    ) -> Result<Self, NatNetError> {
        let lease = Lease::acquire(&dir.join("leases"), RANGE, mac)?;
        let switch = SwitchPort::join_dir(&dir.join("ports"))?;
        options.guest_addr = lease.addr();
        let nat = PasstBackend::spawn(&options)?;
        let epoll = poll_set(&[nat.as_raw_fd(), switch.as_raw_fd()]).map_err(NatNetError::Epoll)?;
        let room = RoomWatch::new(nat.as_raw_fd());
        Ok(Self {
            nat,
            switch,
            lease,
            peers: HashSet::new(),
            switch_first: false,
            epoll,
            room,
        })
    }

    /// The guest's address on the network (what its DHCP lease will say).
    pub fn guest_addr(&self) -> Ipv4Addr {
        self.lease.addr()
    }

    fn route(&self, frame: &[u8]) -> Route {
        route(frame, &self.peers)
    }

    /// After passt took or refused a frame: wait for room only while something waits.
    fn track_nat_room(&mut self, accepted: bool) -> io::Result<bool> {
        let waiting = !accepted || self.nat.has_pending();
        self.room.update(&self.epoll, waiting)?;
        Ok(accepted)
    }

    fn recv_switch(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let got = self.switch.recv(buf)?;
        if let Some(src) = got.and_then(|n| buf[..n].get(6..12)) {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(src);
            if mac[0] & 1 == 0 {
                if self.peers.len() >= MAX_PEERS {
                    self.peers.clear();
                }
                self.peers.insert(mac);
            }
        }
        Ok(got)
    }
}

impl Backend for NatNetBackend {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.switch_first = !self.switch_first;
        if self.switch_first {
            if let Some(n) = self.recv_switch(buf)? {
                return Ok(Some(n));
            }
            self.nat.recv(buf)
        } else {
            if let Some(n) = self.nat.recv(buf)? {
                return Ok(Some(n));
            }
            self.recv_switch(buf)
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        match self.route(frame) {
            Route::Switch => self.switch.send(frame),
            Route::Nat => {
                let accepted = self.nat.send(frame)?;
                self.track_nat_room(accepted)
            }
            Route::Both => {
                // passt may refuse (full): then the frame is retried whole later, so the
                // switch copy goes only once passt took its copy.
                let accepted = self.nat.send(frame)?;
                if !self.track_nat_room(accepted)? {
                    return Ok(false);
                }
                self.switch.send(frame)?;
                Ok(true)
            }
        }
    }

    fn flush(&mut self) -> io::Result<bool> {
        let drained = self.nat.flush()?;
        self.track_nat_room(drained)
    }

    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn mtu(&self) -> Option<u16> {
        self.nat.mtu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vessel-natnet-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn arp_request(target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&ETHERTYPE_ARP);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 10, 0, 2, 15]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f
    }

    #[test]
    fn route_handles_short_and_odd_frames_without_passt() {
        let peers: HashSet<[u8; 6]> = [[2, 0, 0, 0, 0, 9]].into_iter().collect();
        assert_eq!(route(&[], &peers), Route::Nat);
        assert_eq!(route(&[0xff; 5], &peers), Route::Nat);
        // Broadcast cut off before the ARP target: both ways.
        assert_eq!(route(&[0xff; 14], &peers), Route::Both);
        assert_eq!(
            route(&arp_request([10, 0, 2, 16])[..40], &peers),
            Route::Both
        );
        assert_eq!(route(&arp_request([10, 0, 2, 16]), &peers), Route::Switch);
        assert_eq!(route(&[1, 0, 0x5e, 0, 0, 1], &peers), Route::Switch);
        assert_eq!(route(&[2, 0, 0, 0, 0, 9], &peers), Route::Switch);
        assert_eq!(route(&[2, 0, 0, 0, 0, 8, 0], &peers), Route::Nat);
    }

    #[test]
    fn frames_are_steered() {
        if std::process::Command::new("passt")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: passt (apt-get install passt) is not installed");
            return;
        }
        let dir = tmp("route");
        let mut n = NatNetBackend::join_dir(&dir, None, PasstOptions::new(Vec::new())).unwrap();
        assert_eq!(n.guest_addr(), GUEST_ADDR);
        assert_eq!(n.route(&arp_request([10, 0, 2, 2])), Route::Nat);
        assert_eq!(n.route(&arp_request([10, 0, 2, 16])), Route::Switch);
        assert_eq!(n.route(&arp_request([192, 168, 1, 1])), Route::Nat);
        let mut dhcp = vec![0xff; 6];
        dhcp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        assert_eq!(n.route(&dhcp), Route::Both);
        let mut mcast = dhcp.clone();
        mcast[..6].copy_from_slice(&[0x01, 0, 0x5e, 0, 0, 0xfb]);
        assert_eq!(n.route(&mcast), Route::Switch);
        let peer = [2, 0, 0, 0, 0, 9];
        let mut to_peer = peer.to_vec();
        to_peer.extend_from_slice(&dhcp[6..]);
        assert_eq!(
            n.route(&to_peer),
            Route::Nat,
            "unknown MAC: towards the gateway"
        );
        n.peers.insert(peer);
        assert_eq!(n.route(&to_peer), Route::Switch);
        assert_eq!(
            n.route(&[1, 2, 3]),
            Route::Nat,
            "runt frames go to passt, which drops them"
        );
        drop(n);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
