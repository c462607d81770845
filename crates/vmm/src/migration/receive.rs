//! The receiving end of the stream, read as hostile input: the machine first (its RAM is
//! allocated from it, up to the receiver's limit), then guest memory (every range must
//! fall inside that RAM), then the state (validated as a snapshot state file is, and of
//! the machine announced first), and the handshake that resumes the VM.

use std::io::{Read, Write};

use arch::memory_map::RamLayout;
use arch::GuestMemory;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::wire::{self, Kind};
use super::MigrationError;
use crate::snapshot::{MachineState, VmSnapshot};

/// A VM received whole: its state and its RAM, filled, for `Vm::restore_received`.
pub struct Received {
    pub snapshot: VmSnapshot,
    pub mem: GuestMemory,
    /// Bytes of guest memory the stream carried (a page sent twice counts twice).
    pub memory_bytes: u64,
}

/// Reads a migration stream up to its `Done` frame. Machines with more than `max_memory`
/// bytes of RAM are refused before anything is allocated.
pub fn receive(r: &mut impl Read, max_memory: u64) -> Result<Received, MigrationError> {
    wire::read_preamble(r)?;
    let payload = wire::expect(r, Kind::Machine)?.map_err(MigrationError::Sender)?;
    let machine: MachineState =
        serde_json::from_slice(&payload).map_err(|e| MigrationError::Machine(e.to_string()))?;
    if machine.memory > max_memory {
        return Err(MigrationError::MemoryLimit {
            memory: machine.memory,
            limit: max_memory,
        });
    }
    let layout =
        RamLayout::new(machine.memory).map_err(|e| MigrationError::Machine(e.to_string()))?;
    let ranges: Vec<_> = layout
        .ranges
        .iter()
        .map(|&(a, s)| (GuestAddress(a), s as usize))
        .collect();
    let mem = GuestMemory::from_ranges(&ranges).map_err(|e| MigrationError::Allocate {
        size: machine.memory,
        reason: e.to_string(),
    })?;
    let mut memory_bytes = 0u64;
    loop {
        let header = wire::read_header(r)?;
        match header.kind {
            Kind::Memory => {
                let addr = wire::read_address(r)?;
                let len = header.memory_len();
                read_into_memory(r, &mem, addr, len)?;
                memory_bytes += u64::from(len);
            }
            Kind::State => {
                let payload = wire::read_payload(r, header)?;
                let snapshot = crate::snapshot::parse_state(&payload)?;
                if snapshot.machine != machine {
                    return Err(MigrationError::MachineMismatch);
                }
                wire::expect(r, Kind::Done)?.map_err(MigrationError::Sender)?;
                return Ok(Received {
                    snapshot,
                    mem,
                    memory_bytes,
                });
            }
            Kind::Error => {
                let payload = wire::read_payload(r, header)?;
                return Err(MigrationError::Sender(
                    String::from_utf8_lossy(&payload).into_owned(),
                ));
            }
            other => {
                return Err(wire::WireError::Unexpected {
                    got: other.name(),
                    expected: "memory or state",
                }
                .into())
            }
        }
    }
}

/// Reads `len` bytes from `r` into guest memory at `addr`, which must lie in one region.
fn read_into_memory(
    r: &mut impl Read,
    mem: &GuestMemory,
    addr: u64,
    len: u32,
) -> Result<(), MigrationError> {
    let outside = || MigrationError::MemoryRange { addr, len };
    let region = mem.find_region(GuestAddress(addr)).ok_or_else(outside)?;
    let offset = addr - region.start_addr().0;
    let end = offset.checked_add(u64::from(len)).ok_or_else(outside)?;
    if end > region.len() {
        return Err(outside());
    }
    // SAFETY: `offset + len` lies within the region's mapping (checked above), which
    // lives as long as `mem`; no vCPU of this VM exists yet, so nothing else accesses it.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(region.as_ptr().add(offset as usize), len as usize)
    };
    r.read_exact(bytes).map_err(wire::WireError::from)?;
    Ok(())
}

/// Tells the sender the VM is built and waits for its `Go` (or its reason to give up).
pub fn ready_and_wait_go(stream: &mut (impl Read + Write)) -> Result<(), MigrationError> {
    wire::write_frame(stream, Kind::Ready, &[])?;
    wire::expect(stream, Kind::Go)?.map_err(MigrationError::Sender)?;
    Ok(())
}

/// Tells the sender the VM runs here now.
pub fn confirm_resumed(stream: &mut impl Write) -> Result<(), MigrationError> {
    wire::write_frame(stream, Kind::Resumed, &[])?;
    Ok(())
}

/// Tells the sender why this receiver fails (best effort: it may be gone already).
pub fn refuse(stream: &mut impl Write, reason: &str) {
    let mut end = reason.len().min(wire::MAX_ERROR_BYTES as usize);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let _ = wire::write_frame(stream, Kind::Error, &reason.as_bytes()[..end]);
}

#[cfg(test)]
mod tests;
