//! `hostonly:NAME` and `bridged:IFACE` with real Linux network stacks: one namespace
//! stands in for the host (the bridge lives there), another for the guest, whose tap is
//! relayed to the backend's tap on the bridge. Host-only guests get their address from
//! the backend's DHCP server (busybox udhcpc).

mod common;

use std::os::fd::AsRawFd;

use common::services::{udhcpc_script, TempDir};
use common::{can_run, Netns};
use net::bridge::{bridged, hostonly, BridgeError};
use net::hostonly::HostOnlyBackend;
use net::relay::Relay;
use net::tap::TapBackend;

/// Run `f` on a thread inside `ns` (where the bridge and its taps are created).
fn inside<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on this scoped thread only, with a valid netns fd.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0);
            f()
        })
        .join()
        .unwrap()
    })
}

#[test]
fn hostonly_guest_reaches_the_host_address() {
    if !can_run(&[]) {
        return;
    }
    let host = Netns::new();
    let guest = Netns::new();
    let backend: TapBackend = inside(&host, || hostonly("t1").unwrap());
    let tap_name = backend.name().to_owned();
    assert!(host.sh("ip link show master vho-t1").contains(&tap_name));
    assert!(host.sh("ip addr show vho-t1").contains("192.168.56.1/24"));
    let nic = guest.tap("eth0");
    guest.sh("ip addr add 192.168.56.101/24 dev eth0");
    let _relay = Relay::start(Box::new(nic), Box::new(backend)).unwrap();
    guest.sh("busybox ping -c 2 -W 3 192.168.56.1");
    host.sh("busybox ping -c 1 -W 3 192.168.56.101");
    // A second VM joins the existing bridge.
    let second: TapBackend = inside(&host, || hostonly("t1").unwrap());
    assert_ne!(second.name(), tap_name);
}

/// A guest namespace on host-only network `t2` (bridge in `host`), configured by DHCP;
/// returns it, its relay and the address its lease gave.
fn dhcp_guest(
    host: &Netns,
    leases: &std::path::Path,
    tmp: &std::path::Path,
    mac: [u8; 6],
) -> (Netns, Relay, String) {
    let tap = inside(host, || hostonly("t2").unwrap());
    let backend = HostOnlyBackend::with_tap(tap, leases, Some(mac)).unwrap();
    let guest = Netns::new();
    let nic = guest.tap("eth0");
    let mac_str = mac.map(|b| format!("{b:02x}")).join(":");
    guest.sh(&format!("ip link set eth0 address {mac_str}"));
    let relay = Relay::start(Box::new(nic), Box::new(backend)).unwrap();
    let work = tmp.join(mac_str.replace(':', ""));
    std::fs::create_dir_all(&work).unwrap();
    let (script, lease) = udhcpc_script(&work);
    guest.sh(&format!(
        "busybox udhcpc -i eth0 -n -q -f -t 5 -T 1 -s {}",
        script.display()
    ));
    let lease = std::fs::read_to_string(lease).unwrap();
    let addr = lease.split_whitespace().next().unwrap().to_owned();
    (guest, relay, addr)
}

#[test]
fn hostonly_dhcp_gives_each_vm_an_address_the_host_reaches() {
    if !can_run(&[]) {
        return;
    }
    let tmp = TempDir::new("hostonly-dhcp");
    let leases = tmp.path().join("leases");
    let host = Netns::new();
    let (a, _ra, addr_a) = dhcp_guest(&host, &leases, tmp.path(), [0x52, 0x54, 0, 0, 2, 0xa]);
    let (b, _rb, addr_b) = dhcp_guest(&host, &leases, tmp.path(), [0x52, 0x54, 0, 0, 2, 0xb]);
    assert_eq!(addr_a, "192.168.56.101");
    assert_eq!(addr_b, "192.168.56.102");
    assert!(a.sh("ip addr show eth0").contains("192.168.56.101/24"));
    assert!(
        !a.sh("ip route").contains("default"),
        "host-only: no default route"
    );
    // VMs and the host reach each other.
    a.sh("busybox ping -c 1 -W 3 192.168.56.1");
    b.sh("busybox ping -c 1 -W 3 192.168.56.101");
    host.sh("busybox ping -c 1 -W 3 192.168.56.102");
}

#[test]
fn bridged_needs_an_existing_bridge() {
    if !can_run(&[]) {
        return;
    }
    let host = Netns::new();
    host.sh("ip link add br-x type bridge && ip link set br-x up");
    let tap: TapBackend = inside(&host, || bridged("br-x").unwrap());
    assert!(host.sh("ip link show master br-x").contains(tap.name()));
    let err = inside(&host, || bridged("no-such-br").err().unwrap());
    assert!(matches!(err, BridgeError::Ioctl { .. }), "{err}");
}
