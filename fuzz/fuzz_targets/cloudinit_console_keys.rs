//! Fuzz target: arbitrary console text through cloudinit::parse_console_host_keys must not
//! panic, and every key it returns must make a valid known_hosts line.
#![no_main]

use cloudinit::{known_hosts_lines, parse_console_host_keys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let keys = parse_console_host_keys(&text);
    assert!(known_hosts_lines("127.0.0.1", 2222, &keys).is_ok());
});
