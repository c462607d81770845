//! REST API routing and body parsing on arbitrary method/path/body bytes: a bad request
//! is an error value, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    const METHODS: [&str; 5] = ["GET", "PUT", "PATCH", "POST", "DELETE"];
    let Some((&m, rest)) = data.split_first() else { return };
    let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let path = String::from_utf8_lossy(&rest[..split]);
    let body = rest.get(split + 1..).filter(|b| !b.is_empty());
    let _ = api::parse_request(METHODS[usize::from(m) % METHODS.len()], &path, body);
});
