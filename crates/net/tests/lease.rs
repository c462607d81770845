//! Leases in a process of their own: a lock is held by every copy of its file
//! descriptor, and a test elsewhere in the same process that forks (to run `ip`, passt…)
//! would hold a just-dropped lease until its child execs.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use net::lease::{Lease, LeaseRange};

const RANGE: LeaseRange = LeaseRange {
    network: [10, 0, 2],
    first: 15,
    last: 254,
};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vessel-lease-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn leases_are_exclusive_sticky_and_released() {
    let dir = tmp("sticky");
    let (m1, m2) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let a = Lease::acquire(&dir, RANGE, Some(m1)).unwrap();
    let b = Lease::acquire(&dir, RANGE, Some(m2)).unwrap();
    let c = Lease::acquire(&dir, RANGE, None).unwrap();
    assert_eq!(a.addr(), Ipv4Addr::new(10, 0, 2, 15));
    assert_eq!(b.addr(), Ipv4Addr::new(10, 0, 2, 16));
    assert_eq!(c.addr(), Ipv4Addr::new(10, 0, 2, 17));
    // a goes away; m2 comes back after b went too and gets .16 again, not .15.
    drop(a);
    drop(b);
    let b2 = Lease::acquire(&dir, RANGE, Some(m2)).unwrap();
    assert_eq!(b2.addr(), Ipv4Addr::new(10, 0, 2, 16));
    let d = Lease::acquire(&dir, RANGE, None).unwrap();
    assert_eq!(d.addr(), Ipv4Addr::new(10, 0, 2, 15));
    drop((b2, c, d));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_network_is_a_clear_error() {
    let dir = tmp("full");
    let small = LeaseRange {
        network: [192, 168, 56],
        first: 101,
        last: 103,
    };
    let held: Vec<Lease> = (0..3)
        .map(|_| Lease::acquire(&dir, small, None).unwrap())
        .collect();
    assert_eq!(held[2].addr(), Ipv4Addr::new(192, 168, 56, 103));
    let err = Lease::acquire(&dir, small, None).unwrap_err();
    assert!(err.to_string().contains("leased"), "{err}");
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
}
