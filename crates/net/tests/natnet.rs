//! `natnet:NAME` with real Linux network stacks as guests: namespaces whose taps are
//! relayed to NAT-network backends. Each gets its own DHCP address on the one subnet, they
//! reach each other (ping, TCP), each reaches the host's loopback through the gateway,
//! a forwarded host port reaches its VM, and a namespace on another NAT network reaches
//! none of them.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;

use common::services::{
    assert_forward_reaches, free_port, host_tcp_reader, udhcpc_script, TempDir,
};
use common::{can_run, eventually, Netns};
use net::config::parse_forward;
use net::natnet::NatNetBackend;
use net::passt::{PasstOptions, GATEWAY};
use net::relay::Relay;

struct Vm {
    ns: Netns,
    addr: Ipv4Addr,
    _relay: Relay,
}

/// A namespace on the NAT network in `dir` (MAC `mac`), its DHCP lease applied.
fn vm_on(dir: &Path, tmp: &Path, mac: [u8; 6], forwards: &[String]) -> Vm {
    // The VMs reach a host service on the loopback through the gateway: opted in.
    let mut options =
        PasstOptions::new(forwards.iter().map(|f| parse_forward(f).unwrap()).collect());
    options.host_loopback = true;
    let backend = NatNetBackend::join_dir(dir, Some(mac), options).unwrap();
    let leased = backend.guest_addr();
    let ns = Netns::new();
    let tap = ns.tap("eth0");
    let mac_str = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    ns.sh(&format!("ip link set eth0 address {mac_str}"));
    let relay = Relay::start(Box::new(tap), Box::new(backend)).unwrap();
    let work = tmp.join(mac_str.replace(':', ""));
    std::fs::create_dir_all(&work).unwrap();
    let (script, lease) = udhcpc_script(&work);
    ns.sh(&format!(
        "busybox udhcpc -i eth0 -n -q -f -t 5 -T 1 -s {}",
        script.display()
    ));
    let lease = std::fs::read_to_string(&lease).unwrap();
    let fields: Vec<&str> = lease.split_whitespace().collect();
    assert_eq!(
        fields[0],
        leased.to_string(),
        "DHCP gives the leased address"
    );
    assert_eq!(fields[1], GATEWAY.to_string(), "router");
    Vm {
        ns,
        addr: leased,
        _relay: relay,
    }
}

/// Whether nobody holds the lease file at `path`.
fn lockable(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    // SAFETY: flock on a file this function owns; closing it releases the lock.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Send a line from `from` to a `busybox nc -l` on `to`, return what arrived.
fn tcp_line(from: &Vm, to: &Vm, port: u16, line: &str) -> String {
    let server = to.ns.spawn(&format!("busybox nc -l -p {port}"));
    assert!(eventually(10, || to
        .ns
        .sh("ss -ltn")
        .contains(&format!(":{port}"))));
    let client = from
        .ns
        .run(&format!("echo {line} | busybox nc -w 3 {} {port}", to.addr));
    let out = server.finish(10);
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    if got != format!("{line}\n") {
        // Say enough to tell a lost frame from a slow tool when this fails.
        eprintln!(
            "tcp_line {line}: client {:?} {}; server stderr {}; sender's neighbours:\n{}",
            client.status,
            String::from_utf8_lossy(&client.stderr),
            String::from_utf8_lossy(&out.stderr),
            from.ns.run("ip neigh show dev eth0").stdout.escape_ascii()
        );
    }
    got
}

#[test]
fn natnet_vms_share_a_subnet_reach_each_other_and_the_host() {
    if !can_run(&[("passt", "passt")]) {
        return;
    }
    let tmp = TempDir::new("natnet");
    let lab = tmp.path().join("lab");
    let other = tmp.path().join("other");
    let fwd_port = free_port();
    let a = vm_on(&lab, tmp.path(), [0x52, 0x54, 0, 0, 0, 0xa1], &[]);
    let b = vm_on(
        &lab,
        tmp.path(),
        [0x52, 0x54, 0, 0, 0, 0xb2],
        &[format!("tcp:127.0.0.1:{fwd_port}-:8022")],
    );
    let c = vm_on(&other, tmp.path(), [0x52, 0x54, 0, 0, 0, 0xc3], &[]);
    assert_eq!(a.addr, Ipv4Addr::new(10, 0, 2, 15));
    assert_eq!(
        b.addr,
        Ipv4Addr::new(10, 0, 2, 16),
        "one DHCP range: b gets the next address"
    );
    assert_eq!(
        c.addr,
        Ipv4Addr::new(10, 0, 2, 15),
        "another network has its own range"
    );

    // The VMs of one network reach each other directly (ARP through the switch).
    a.ns.sh(&format!("busybox ping -c 2 -W 3 {}", b.addr));
    b.ns.sh(&format!("busybox ping -c 1 -W 3 {}", a.addr));
    assert_eq!(tcp_line(&a, &b, 7000, "a-to-b"), "a-to-b\n");
    assert_eq!(tcp_line(&b, &a, 7001, "b-to-a"), "b-to-a\n");
    let neigh = a.ns.sh("ip neigh show dev eth0");
    assert!(
        neigh.contains(&b.addr.to_string()) && neigh.contains("52:54:00:00:00:b2"),
        "a resolved b to b's own MAC, not the NAT's: {neigh}"
    );

    // Each reaches the host's loopback through its NAT (the gateway address).
    for vm in [&a, &b] {
        let (port, server) = host_tcp_reader();
        vm.ns.sh(&format!(
            "echo from-{} | busybox nc -w 3 {GATEWAY} {port}",
            vm.addr
        ));
        assert_eq!(server.join().unwrap(), format!("from-{}\n", vm.addr));
    }

    // A forwarded host port reaches its VM.
    assert_forward_reaches(&b.ns, fwd_port, 8022);

    // Another NAT network is isolated: c reaches neither a nor b.
    assert!(!c
        .ns
        .run(&format!("busybox ping -c 2 -W 2 {}", b.addr))
        .status
        .success());
    assert!(!a
        .ns
        .run("busybox ping -c 1 -W 2 10.0.2.17")
        .status
        .success());
}

#[test]
fn a_vm_leaving_frees_its_address_and_the_others_keep_talking() {
    if !can_run(&[("passt", "passt")]) {
        return;
    }
    let tmp = TempDir::new("natnet-leave");
    let lab = tmp.path().join("lab");
    let a = vm_on(&lab, tmp.path(), [0x52, 0x54, 0, 0, 1, 0xa1], &[]);
    let b = vm_on(&lab, tmp.path(), [0x52, 0x54, 0, 0, 1, 0xb2], &[]);
    assert_eq!((a.addr.octets()[3], b.addr.octets()[3]), (15, 16));
    drop(a);
    // A process another test forked while a's lease was open holds that lock until it
    // execs (locks belong to every copy of the fd): wait until the address is free.
    let freed = lab.join("leases/10.0.2.15");
    assert!(eventually(10, || lockable(&freed)));
    // A new VM takes the freed address; b talks to it.
    let d = vm_on(&lab, tmp.path(), [0x52, 0x54, 0, 0, 1, 0xd4], &[]);
    assert_eq!(d.addr.octets()[3], 15);
    b.ns.sh(&format!("busybox ping -c 2 -W 3 {}", d.addr));
}
