//! `internal:NAME` with real Linux network stacks: namespaces on the same name reach each
//! other (ping, TCP), one on another name cannot; a VM vanishing leaves the switch working.
//! Also: `tap:NAME` without CAP_NET_ADMIN fails with a clear error.

mod common;

use common::services::TempDir;
use common::{can_run, eventually, Netns};
use net::relay::Relay;
use net::switch::SwitchPort;
use net::tap::{TapBackend, TapError};

const CAP_NET_ADMIN: u32 = 12;

/// A namespace whose eth0 (address `addr`/24) is a port of the switch in `dir`.
fn vm_on(dir: &std::path::Path, addr: &str) -> (Netns, Relay) {
    let ns = Netns::new();
    let tap = ns.tap("eth0");
    ns.sh(&format!("ip addr add {addr}/24 dev eth0"));
    let port = SwitchPort::join_dir(dir).unwrap();
    let relay = Relay::start(Box::new(tap), Box::new(port)).unwrap();
    (ns, relay)
}

#[test]
fn internal_network_joins_same_name_only() {
    if !can_run(&[]) {
        return;
    }
    let tmp = TempDir::new("internal");
    let lab = tmp.path().join("lab");
    let other = tmp.path().join("other");
    let (a, _ra) = vm_on(&lab, "192.168.77.1");
    let (b, _rb) = vm_on(&lab, "192.168.77.2");
    let (c, _rc) = vm_on(&other, "192.168.77.3");

    a.sh("busybox ping -c 2 -W 3 192.168.77.2");
    b.sh("busybox ping -c 1 -W 3 192.168.77.1");

    // TCP from a to b.
    let server = b.spawn("busybox nc -l -p 7000");
    assert!(eventually(10, || b.sh("ss -ltn").contains(":7000")));
    a.sh("echo over-the-switch | busybox nc -w 3 192.168.77.2 7000");
    let out = server.finish(10);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over-the-switch\n");

    // c is on another name: nothing reaches it, and it reaches nothing.
    assert!(!a
        .run("busybox ping -c 2 -W 2 192.168.77.3")
        .status
        .success());
    assert!(!c
        .run("busybox ping -c 2 -W 2 192.168.77.1")
        .status
        .success());

    // A third VM on lab comes and goes; a and b keep talking.
    let (d, rd) = vm_on(&lab, "192.168.77.4");
    d.sh("busybox ping -c 1 -W 3 192.168.77.1");
    drop(rd);
    drop(d);
    a.sh("busybox ping -c 1 -W 3 192.168.77.2");
    assert!(!a
        .run("busybox ping -c 1 -W 2 192.168.77.4")
        .status
        .success());
}

/// CAP_NET_ADMIN is dropped from this thread's effective set (capabilities are per
/// thread), then opening a tap must fail with [`TapError::NoNetAdmin`].
#[test]
fn tap_without_cap_net_admin_is_a_clear_error() {
    if !can_run(&[]) {
        return;
    }
    let err = std::thread::spawn(|| {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut header = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: capget/capset with a v3 header and two data structs, as the ABI asks;
        // this affects only the calling thread.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
                0
            );
            data[0].effective &= !(1 << CAP_NET_ADMIN);
            assert_eq!(
                libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
                0
            );
        }
        TapBackend::open("vtnocap0", false).err()
    })
    .join()
    .unwrap();
    let err = err.expect("opening a tap without CAP_NET_ADMIN must fail");
    assert!(matches!(err, TapError::NoNetAdmin { .. }), "{err}");
    assert!(err.to_string().contains("CAP_NET_ADMIN"));
}
