//! Broken and hostile streams fail the receiver with the reason; a good one fills memory.

use super::*;
use crate::migration::wire::{write_frame, write_memory, write_preamble, MAGIC};
use vm_memory::Bytes;

const LIMIT: u64 = 1 << 30;

fn machine_json() -> Vec<u8> {
    serde_json::to_vec(&crate::snapshot::sample_state().machine).unwrap()
}

fn state_json() -> Vec<u8> {
    serde_json::to_vec(&crate::snapshot::sample_state()).unwrap()
}

/// A stream: preamble, machine, the memory frames, state and done.
fn good_stream(memory: &[(u64, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    write_preamble(&mut out).unwrap();
    write_frame(&mut out, Kind::Machine, &machine_json()).unwrap();
    for (addr, bytes) in memory {
        write_memory(&mut out, *addr, bytes).unwrap();
    }
    write_frame(&mut out, Kind::State, &state_json()).unwrap();
    write_frame(&mut out, Kind::Done, &[]).unwrap();
    out
}

fn run(bytes: &[u8]) -> Result<Received, MigrationError> {
    receive(&mut std::io::Cursor::new(bytes), LIMIT, Storage::Shared)
}

/// The error a stream fails with.
fn failure(result: Result<Received, MigrationError>) -> MigrationError {
    match result {
        Ok(_) => panic!("a broken stream was accepted"),
        Err(e) => e,
    }
}

#[test]
fn a_good_stream_fills_memory_and_gives_the_state() {
    let received = run(&good_stream(&[(0x1000, &[1, 2, 3]), (0x1001, &[9])])).unwrap();
    let mut back = [0u8; 3];
    received
        .mem
        .read_slice(&mut back, GuestAddress(0x1000))
        .unwrap();
    assert_eq!(back, [1, 9, 3], "later frames overwrite earlier ones");
    assert_eq!(received.memory_bytes, 4);
    assert_eq!(received.snapshot.machine.cpus, 2);
}

#[test]
fn memory_outside_ram_is_refused() {
    let ram_end = 128u64 << 20;
    for (addr, len) in [
        (ram_end, 1usize),
        (ram_end - 1, 2),
        (u64::MAX - 3, 8),
        (0xfee0_0000, 4),
    ] {
        let bytes = vec![0u8; len];
        let err = failure(run(&good_stream(&[(addr, &bytes)])));
        assert!(
            matches!(err, MigrationError::MemoryRange { .. }),
            "{addr:#x}+{len}: {err}"
        );
    }
}

#[test]
fn every_truncation_fails_cleanly() {
    let stream = good_stream(&[(0, &[5; 64])]);
    for cut in 0..stream.len() {
        assert!(run(&stream[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn wrong_magic_version_and_order_are_refused() {
    let mut stream = good_stream(&[]);
    stream[8] = 9;
    assert!(matches!(
        run(&stream),
        Err(MigrationError::Wire(wire::WireError::Version { found: 9 }))
    ));
    let mut stream = good_stream(&[]);
    stream[..8].copy_from_slice(b"QEMU\0\0\0\0");
    assert!(matches!(
        run(&stream),
        Err(MigrationError::Wire(wire::WireError::Magic))
    ));
    // Memory before the machine.
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&wire::VERSION.to_le_bytes());
    write_memory(&mut out, 0, &[1]).unwrap();
    assert!(matches!(
        run(&out),
        Err(MigrationError::Wire(wire::WireError::Unexpected { .. }))
    ));
    // Something other than Done after the state.
    let mut out = Vec::new();
    write_preamble(&mut out).unwrap();
    write_frame(&mut out, Kind::Machine, &machine_json()).unwrap();
    write_frame(&mut out, Kind::State, &state_json()).unwrap();
    write_frame(&mut out, Kind::Go, &[]).unwrap();
    assert!(run(&out).is_err());
}

#[test]
fn machines_and_states_that_do_not_fit_are_refused() {
    // More RAM than the receiver takes: refused before allocating.
    let err = failure(receive(
        &mut std::io::Cursor::new(good_stream(&[])),
        64 << 20,
        Storage::Shared,
    ));
    assert!(matches!(err, MigrationError::MemoryLimit { .. }), "{err}");
    // A machine that is not JSON, or a RAM size vessel cannot lay out.
    let mut out = Vec::new();
    write_preamble(&mut out).unwrap();
    write_frame(&mut out, Kind::Machine, b"{\"memory\": ").unwrap();
    assert!(matches!(run(&out), Err(MigrationError::Machine(_))));
    let mut machine = crate::snapshot::sample_state().machine;
    machine.memory = 12345;
    let mut out = Vec::new();
    write_preamble(&mut out).unwrap();
    write_frame(
        &mut out,
        Kind::Machine,
        &serde_json::to_vec(&machine).unwrap(),
    )
    .unwrap();
    assert!(matches!(run(&out), Err(MigrationError::Machine(_))));
    // A state of another machine than the one announced.
    let mut machine = crate::snapshot::sample_state().machine;
    machine.memory = 256 << 20;
    let mut out = Vec::new();
    write_preamble(&mut out).unwrap();
    write_frame(
        &mut out,
        Kind::Machine,
        &serde_json::to_vec(&machine).unwrap(),
    )
    .unwrap();
    write_frame(&mut out, Kind::State, &state_json()).unwrap();
    assert!(matches!(run(&out), Err(MigrationError::MachineMismatch)));
}

#[test]
fn a_device_state_for_a_device_the_machine_lacks_is_refused() {
    let mut state: serde_json::Value = serde_json::from_slice(&state_json()).unwrap();
    let rng = serde_json::json!({"device_type": 4});
    state["devices"]["virtio"] = serde_json::json!([rng]);
    let mut out = Vec::new();
    write_preamble(&mut out).unwrap();
    write_frame(&mut out, Kind::Machine, &machine_json()).unwrap();
    write_frame(&mut out, Kind::State, &serde_json::to_vec(&state).unwrap()).unwrap();
    write_frame(&mut out, Kind::Done, &[]).unwrap();
    let err = failure(run(&out));
    assert!(matches!(err, MigrationError::Snapshot(_)), "{err}");
}

#[test]
fn the_senders_error_is_reported() {
    let mut out = Vec::new();
    write_preamble(&mut out).unwrap();
    write_frame(&mut out, Kind::Machine, &machine_json()).unwrap();
    write_frame(&mut out, Kind::Error, b"cancelled").unwrap();
    let err = failure(run(&out));
    assert!(err.to_string().contains("cancelled"), "{err}");
}

/// Writes the fuzz target's seeds (`fuzz/corpus/migration_stream/`): run with
/// `VESSEL_FUZZ_SEED_DIR=fuzz/corpus/migration_stream cargo test -p vmm write_fuzz_seeds -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("VESSEL_FUZZ_SEED_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let good = good_stream(&[(0x1000, &[0x90; 64]), (0x10_0000, &[1, 2, 3, 4])]);
    std::fs::write(dir.join("two-chunks"), &good).unwrap();
    std::fs::write(dir.join("no-memory"), good_stream(&[])).unwrap();
}
