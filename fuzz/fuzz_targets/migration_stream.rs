//! A live migration stream (`vessel run --incoming`) is untrusted input: reading any bytes
//! must return an error or a received VM, never panic or write outside guest RAM, and a
//! VM it accepts has the RAM its machine declares.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

/// The most RAM the fuzzed receiver allocates (the seeds' machines have 128 MiB).
const MAX_MEMORY: u64 = 256 << 20;

fuzz_target!(|data: &[u8]| {
    let mut stream = std::io::Cursor::new(data);
    if let Ok(received) =
        vmm::migration::receive(&mut stream, MAX_MEMORY, vmm::migration::Storage::Shared)
    {
        let ram: u64 = received.mem.iter().map(|r| r.len()).sum();
        assert_eq!(ram, received.snapshot.machine.memory);
        assert!(received.memory_bytes <= data.len() as u64);
    }
});
