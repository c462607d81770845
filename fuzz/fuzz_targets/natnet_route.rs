//! The NAT network's steering of guest frames (broadcast ARP, multicast, learned peer MACs)
//! on arbitrary frames: never a panic, and a frame too short for a MAC goes to the NAT.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use net::natnet::{route, Route};

fuzz_target!(|data: &[u8]| {
    let Some((&n, frame)) = data.split_first() else {
        return;
    };
    // The first byte says how many leading 6-byte groups of the frame are learned peers.
    let peers: HashSet<[u8; 6]> = frame
        .chunks_exact(6)
        .take(usize::from(n & 7))
        .filter_map(|c| c.try_into().ok())
        .collect();
    let r = route(frame, &peers);
    if frame.len() < 6 {
        assert_eq!(r, Route::Nat);
    }
});
