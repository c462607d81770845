//! The ELF kernel inside a bzImage: its compressed payload (boot protocol 2.08+
//! `payload_offset`/`payload_length`) decompressed on the host ([`crate::decompress`]).
//! Booted directly (PVH entry), it skips the bzImage's own decompressor, which on a software
//! nested KVM (kvm_pvm) runs through KVM's instruction emulator for minutes
//! (docs/nested-kvm.md).
//!
//! The bzImage comes from a disk image, so it is hostile input: every offset is checked
//! and the output is capped at [`MAX_VMLINUX`].

use crate::decompress::{decompress, Compression, DecompressError};

/// The largest decompressed kernel accepted.
pub const MAX_VMLINUX: usize = 512 << 20;

/// Why no ELF kernel came out of a bzImage.
#[derive(Debug, thiserror::Error)]
pub enum VmlinuxError {
    #[error("not a bzImage (no \"HdrS\" boot header)")]
    NotBzImage,
    #[error("bzImage boot protocol {0:#x} predates payload fields (2.08)")]
    OldProtocol(u16),
    #[error("the bzImage's payload lies outside the file")]
    PayloadOutside,
    #[error("the bzImage's payload: {0}")]
    Payload(#[from] DecompressError),
    #[error("the bzImage's payload is not a 64-bit ELF kernel")]
    NotElf,
}

/// The ELF kernel in the bzImage `bz`, and how it was compressed.
pub fn extract_vmlinux(bz: &[u8]) -> Result<(Vec<u8>, Compression), VmlinuxError> {
    let (elf, format) = decompress(payload(bz)?, MAX_VMLINUX)?;
    // ELF magic, ELFCLASS64, little-endian.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(VmlinuxError::NotElf);
    }
    Ok((elf, format))
}

/// The compressed payload, as the boot header places it.
fn payload(bz: &[u8]) -> Result<&[u8], VmlinuxError> {
    let u16_at = |o: usize| bz.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        bz.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if bz.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return Err(VmlinuxError::NotBzImage);
    }
    let version = u16_at(0x206).ok_or(VmlinuxError::NotBzImage)?;
    if version < 0x208 {
        return Err(VmlinuxError::OldProtocol(version));
    }
    let setup_sects = match bz.get(0x1f1).copied().ok_or(VmlinuxError::NotBzImage)? {
        0 => 4,
        n => usize::from(n),
    };
    let offset = u32_at(0x248).ok_or(VmlinuxError::NotBzImage)?;
    let length = u32_at(0x24c).ok_or(VmlinuxError::NotBzImage)?;
    let start = usize::try_from(offset)
        .ok()
        .and_then(|o| o.checked_add((setup_sects + 1) * 512))
        .ok_or(VmlinuxError::PayloadOutside)?;
    let end = usize::try_from(length)
        .ok()
        .and_then(|l| start.checked_add(l))
        .ok_or(VmlinuxError::PayloadOutside)?;
    bz.get(start..end).ok_or(VmlinuxError::PayloadOutside)
}

#[cfg(test)]
#[path = "vmlinux_tests.rs"]
mod tests;
