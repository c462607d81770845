//! The userspace switch's forwarding (MAC learning from received frames, flooding, unicast
//! to learned ports) on arbitrary guest frames between three ports: never a panic or an
//! error, and what a port receives is exactly the frame just sent, never its own.
//!
//! Input: frames, each preceded by one byte: bits 0-1 the sending port, bits 2-7 the length
//! in units of 4 bytes (so runts and full headers both occur).
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use net::switch::SwitchPort;
use net::Backend;

struct Switch {
    _dir: tempfile::TempDir,
    ports: Vec<SwitchPort>,
}

fn switch() -> &'static Mutex<Option<Switch>> {
    static SWITCH: OnceLock<Mutex<Option<Switch>>> = OnceLock::new();
    SWITCH.get_or_init(|| {
        let made = tempfile::tempdir().ok().and_then(|dir| {
            let ports = (0..3)
                .map(|_| SwitchPort::join_dir(dir.path()).ok())
                .collect::<Option<Vec<_>>>()?;
            Some(Switch { _dir: dir, ports })
        });
        Mutex::new(made)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut guard = switch().lock().unwrap_or_else(|p| p.into_inner());
    let Some(sw) = guard.as_mut() else { return };
    let mut buf = vec![0u8; 65536];
    let mut rest = data;
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head >> 2) * 4;
        let (frame, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        let from = usize::from(head & 3) % sw.ports.len();
        assert!(sw.ports[from].send(frame).expect("switch send"));
        for (i, port) in sw.ports.iter_mut().enumerate() {
            while let Some(n) = port.recv(&mut buf).expect("switch recv") {
                assert!(i != from, "a port received its own frame");
                assert_eq!(&buf[..n], frame, "a frame changed on the way");
            }
        }
    }
});
