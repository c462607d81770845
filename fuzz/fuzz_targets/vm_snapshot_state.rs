//! The VM snapshot state file (`PUT /snapshot/load`'s `snapshot_path`) is untrusted input:
//! parsing and validating any bytes must return an error or a snapshot, never panic, and a
//! snapshot it accepts encodes and parses again to the same machine.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = vmm::snapshot::parse_state(data) {
        let again = serde_json::to_vec(&snapshot).expect("an accepted snapshot encodes");
        let back = vmm::snapshot::parse_state(&again).expect("and parses again");
        assert_eq!(back.machine, snapshot.machine);
        assert_eq!(back.devices, snapshot.devices);
        assert_eq!(back.vcpus.len(), snapshot.vcpus.len());
    }
});
