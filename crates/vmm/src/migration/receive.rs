//! The receiving end of the stream, read as hostile input: the machine first (its RAM is
//! allocated from it, up to the receiver's limit), then guest memory (every range must
//! fall inside that RAM), then the state (validated as a snapshot state file is, and of
//! the machine announced first), and the handshake that resumes the VM.

use std::io::{Read, Write};

use arch::memory_map::RamLayout;
use arch::GuestMemory;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::storage::{DiskTargets, Storage};
use super::wire::{self, Kind};
use super::MigrationError;
use crate::snapshot::{MachineState, VmSnapshot};

/// A VM received whole: its state and its RAM, filled, for `Vm::restore_received`.
pub struct Received {
    pub snapshot: VmSnapshot,
    pub mem: GuestMemory,
    /// Bytes of guest memory the stream carried (a page sent twice counts twice).
    pub memory_bytes: u64,
    /// Bytes of disk data the stream carried (`--copy-storage`; zero ranges not counted).
    pub disk_bytes: u64,
}

/// Reads a migration stream up to its `Done` frame. Machines with more than `max_memory`
/// bytes of RAM are refused before anything is allocated; the disks come as `storage`
/// says (a stream that does not match it is refused).
pub fn receive(
    r: &mut impl Read,
    max_memory: u64,
    storage: Storage,
) -> Result<Received, MigrationError> {
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
    // virtiofsd maps the RAM of a VM with shares: a shared memfd then.
    let mem = if machine.shares.is_empty() {
        GuestMemory::from_ranges(&ranges).map_err(|e| e.to_string())
    } else {
        crate::shared_memory::shared_guest_memory(&ranges).map_err(|e| e.to_string())
    }
    .map_err(|reason| MigrationError::Allocate {
        size: machine.memory,
        reason,
    })?;
    let mut memory_bytes = 0u64;
    let (mut targets, mut header) = disk_targets(r, storage, &machine)?;
    loop {
        match header.kind {
            Kind::Memory => {
                let addr = wire::read_address(r)?;
                let len = header.memory_len();
                read_into_memory(r, &mem, addr, len)?;
                memory_bytes += u64::from(len);
            }
            Kind::DiskData if targets.is_some() => {
                if let Some(t) = targets.as_mut() {
                    t.data(r, header)?;
                }
            }
            Kind::DiskZero if targets.is_some() => {
                let payload = wire::read_payload(r, header)?;
                if let Some(t) = targets.as_mut() {
                    t.zero(&payload)?;
                }
            }
            Kind::State => {
                let payload = wire::read_payload(r, header)?;
                let snapshot = crate::snapshot::parse_state(&payload)?;
                if snapshot.machine != machine {
                    return Err(MigrationError::MachineMismatch);
                }
                wire::expect(r, Kind::Done)?.map_err(MigrationError::Sender)?;
                let disk_bytes = match targets {
                    Some(t) => t.finish()?,
                    None => 0,
                };
                return Ok(Received {
                    snapshot,
                    mem,
                    memory_bytes,
                    disk_bytes,
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
        header = wire::read_header(r)?;
    }
}

/// Reads the frame after the machine: with `Storage::Copied` it must list the disks,
/// whose targets are opened; with `Storage::Shared` it must not. Returns the targets and
/// the next frame's header.
fn disk_targets(
    r: &mut impl Read,
    storage: Storage,
    machine: &MachineState,
) -> Result<(Option<DiskTargets>, wire::Header), MigrationError> {
    let header = wire::read_header(r)?;
    match (storage, header.kind) {
        (Storage::Shared, Kind::Disks) => Err(MigrationError::UnexpectedDisks),
        (Storage::Shared, _) => Ok((None, header)),
        (Storage::Copied(open), Kind::Disks) => {
            let sizes = wire::parse_disks(&wire::read_payload(r, header)?);
            let targets = DiskTargets::open(open, machine, &sizes)?;
            Ok((Some(targets), wire::read_header(r)?))
        }
        (Storage::Copied(_), Kind::Error) => {
            let payload = wire::read_payload(r, header)?;
            Err(MigrationError::Sender(
                String::from_utf8_lossy(&payload).into_owned(),
            ))
        }
        (Storage::Copied(_), _) => Err(MigrationError::NoDisks),
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
mod disk_tests;
#[cfg(test)]
mod tests;
