//! The MMDS endpoint on arbitrary guest frames (the frame check, smoltcp's ARP/IPv4/TCP and
//! the connections on top), and the HTTP request parser with the service's answers on
//! arbitrary bytes: never a panic, every frame out a well-formed length.
//!
//! Input: the first byte picks the mode. Even: the rest is one HTTP request for the
//! parser and, when it parses, for a V2 service's answer. Odd: frames, each preceded by a
//! big-endian u16 length, sent to the endpoint with the clock moving 1 ms (or, when the
//! length's top bit is set, 40 s) per frame; the endpoint's frames are drained after each.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use mmds::{Endpoint, Mmds, MmdsVersion};
use smoltcp::time::Instant;

fn service() -> Arc<Mutex<Mmds>> {
    let mut m = Mmds::new(mmds::DEFAULT_SIZE_LIMIT).expect("getrandom");
    m.set_version(MmdsVersion::V2);
    let doc = serde_json::json!({"latest": {"meta-data": {"instance-id": "i-1", "n": 3}}});
    m.store_mut().put(doc).expect("fits");
    Arc::new(Mutex::new(m))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mmds = service();
    if mode % 2 == 0 {
        if let Ok(Some(request)) = mmds::http::parse_request(rest) {
            let reply = mmds.lock().expect("not poisoned").respond(&request);
            assert!(!reply.to_bytes(request.http10).is_empty());
        }
        return;
    }
    let mut endpoint = Endpoint::new(mmds, mmds::DEFAULT_IPV4).expect("getrandom");
    let mut now = Instant::from_millis(1);
    let mut out = vec![0u8; 2048];
    let mut input = rest;
    while input.len() >= 2 {
        let header = u16::from_be_bytes([input[0], input[1]]);
        let len = usize::from(header & 0x7fff).min(input.len() - 2);
        let frame = &input[2..2 + len];
        input = &input[2 + len..];
        now += if header & 0x8000 != 0 {
            smoltcp::time::Duration::from_secs(40)
        } else {
            smoltcp::time::Duration::from_millis(1)
        };
        let _ = mmds::is_for_mmds(frame, mmds::DEFAULT_IPV4);
        endpoint.receive_frame_at(frame, now);
        while let Some(n) = endpoint.next_frame_at(&mut out, now) {
            assert!((14..=out.len()).contains(&n));
        }
    }
});
