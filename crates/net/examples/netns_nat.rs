//! Put a network namespace behind vessel's NAT, as a guest NIC would be: creates tap
//! `eth0` inside the namespace and relays its frames to a passt NAT backend until
//! stdin closes. Used by bench/net.sh.
//!
//! Usage: netns_nat NETNS [--host-loopback] [FORWARD...]   (FORWARD as in
//! --nic nat,forward=…; --host-loopback as --nic nat,host-loopback=on)

use std::io::Read;
use std::os::fd::AsRawFd;

use net::config::parse_forward;
use net::passt::{PasstBackend, PasstOptions};
use net::relay::Relay;
use net::tap::TapBackend;

fn main() {
    let mut args = std::env::args().skip(1);
    let netns = args
        .next()
        .expect("usage: netns_nat NETNS [--host-loopback] [FORWARD...]");
    let mut args = args.peekable();
    let host_loopback = args.next_if(|a| a == "--host-loopback").is_some();
    let forwards = args.map(|f| parse_forward(&f).expect("forward")).collect();
    let mut options = PasstOptions::new(forwards);
    options.host_loopback = host_loopback;
    let nat = PasstBackend::spawn(&options).expect("passt");
    let path = format!("/var/run/netns/{netns}");
    let fd = std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("netns");
        // SAFETY: setns on this short-lived thread only, with a valid netns fd.
        let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        TapBackend::open("eth0", false).expect("tap").into_fd()
    })
    .join()
    .unwrap();
    let tap = TapBackend::from_fd(fd, false).expect("tap fd");
    let relay = Relay::start(Box::new(tap), Box::new(nat)).expect("relay");
    println!("ready");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(relay);
}
