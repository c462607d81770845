//! `hostonly:NAME` and `bridged:IFACE` with real Linux network stacks: one namespace
//! stands in for the host (the bridge lives there), another for the guest, whose tap is
//! relayed to the backend's tap on the bridge.

mod common;

use std::os::fd::AsRawFd;

use common::{can_run, Netns};
use net::bridge::{bridged, hostonly, BridgeError};
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
