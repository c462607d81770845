//! virtio-rng through the PCI transport.

mod harness;

use harness::vring::Buf;
use harness::{Driver, Setup};
use virtio::rng::Rng;

fn rng() -> Driver {
    let mut d = Driver::plug(Box::new(Rng::new()));
    let (vendor, device) = d.probe();
    assert_eq!((vendor, device), (0x1af4, 0x1044));
    d.init(Setup::default());
    d
}

#[test]
fn fills_writable_buffers() {
    let mut d = rng();
    let a = d.alloc(64, 0);
    let b = d.alloc(200, 0);
    let head = d.queues[0].chain(&d.mem, &[Buf::w(a, 64), Buf::w(b, 200)]);
    d.queues[0].offer(&d.mem, head);
    d.kick(0);
    assert_eq!(d.queues[0].take_used(&d.mem), vec![(u32::from(head), 264)]);
    let first = d.read_mem(a, 64);
    let second = d.read_mem(b, 200);
    assert!(first.iter().any(|&x| x != 0) && second.iter().any(|&x| x != 0));
    assert_ne!(first[..32], second[..32]);
    assert_eq!(d.msi.take(), vec![1]);
}

#[test]
fn large_requests_are_capped() {
    let mut d = rng();
    let a = d.alloc(128 << 10, 0);
    let head = d.queues[0].chain(&d.mem, &[Buf::w(a, 128 << 10)]);
    d.queues[0].offer(&d.mem, head);
    d.kick(0);
    assert_eq!(
        d.queues[0].take_used(&d.mem),
        vec![(u32::from(head), 64 << 10)]
    );
}

#[test]
fn readable_buffers_get_nothing() {
    let mut d = rng();
    let a = d.alloc(64, 0xab);
    let head = d.queues[0].chain(&d.mem, &[Buf::r(a, 64)]);
    d.queues[0].offer(&d.mem, head);
    d.kick(0);
    assert_eq!(d.queues[0].take_used(&d.mem), vec![(u32::from(head), 0)]);
    assert_eq!(d.read_mem(a, 64), vec![0xab; 64]);
}
