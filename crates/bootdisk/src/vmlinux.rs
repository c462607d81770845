//! The ELF kernel inside a bzImage: its compressed payload (boot protocol 2.08+
//! `payload_offset`/`payload_length`) decompressed on the host. Booted directly (PVH entry),
//! it skips the bzImage's own decompressor, which on a software nested KVM (kvm_pvm) runs
//! through KVM's instruction emulator for minutes (docs/nested-kvm.md).
//!
//! The bzImage comes from a disk image, so it is hostile input: every offset is checked
//! and the output is capped at [`MAX_VMLINUX`].

use std::io::{Read, Write};

/// The largest decompressed kernel accepted.
pub const MAX_VMLINUX: usize = 512 << 20;
/// The most one block of the kernel's legacy LZ4 format decompresses to (`lz4 -l`).
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;

/// Why no ELF kernel came out of a bzImage.
#[derive(Debug, thiserror::Error)]
pub enum VmlinuxError {
    #[error("not a bzImage (no \"HdrS\" boot header)")]
    NotBzImage,
    #[error("bzImage boot protocol {0:#x} predates payload fields (2.08)")]
    OldProtocol(u16),
    #[error("the bzImage's payload lies outside the file")]
    PayloadOutside,
    #[error("the bzImage's payload is compressed with {0}, which vessel does not decompress")]
    Unsupported(&'static str),
    #[error("the bzImage's payload has an unknown compression format")]
    UnknownFormat,
    #[error("cannot decompress the bzImage's {format} payload: {reason}")]
    Corrupt {
        format: &'static str,
        reason: String,
    },
    #[error("the decompressed kernel is over {} MiB", MAX_VMLINUX >> 20)]
    TooLarge,
    #[error("the bzImage's payload is not a 64-bit ELF kernel")]
    NotElf,
}

/// The payload's compression, from its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Lz4Legacy,
    Zstd,
    Xz,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Lz4Legacy => "LZ4",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        }
    }
}

/// The ELF kernel in the bzImage `bz`, and how it was compressed.
pub fn extract_vmlinux(bz: &[u8]) -> Result<(Vec<u8>, Compression), VmlinuxError> {
    let payload = payload(bz)?;
    let format = compression(payload)?;
    let corrupt = |reason: String| VmlinuxError::Corrupt {
        format: format.name(),
        reason,
    };
    let elf = match format {
        Compression::Gzip => {
            read_capped(flate2::read::GzDecoder::new(payload)).map_err(corrupt)?
        }
        Compression::Zstd => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(payload)
                .map_err(|e| corrupt(e.to_string()))?;
            read_capped(decoder).map_err(corrupt)?
        }
        Compression::Xz => {
            // The kernel's build appends the decompressed size after the stream's footer
            // (which ends in "YZ"); lzma-rs refuses data after the stream.
            let stream = match payload.len().checked_sub(4) {
                Some(end) if !payload.ends_with(b"YZ") && payload[..end].ends_with(b"YZ") => {
                    &payload[..end]
                }
                _ => payload,
            };
            let mut out = CappedWriter(Vec::new());
            lzma_rs::xz_decompress(&mut &*stream, &mut out)
                .map_err(|e| corrupt(e.to_string()))?;
            out.0
        }
        Compression::Lz4Legacy => lz4_legacy(payload).map_err(corrupt)?,
    };
    if elf.len() > MAX_VMLINUX {
        return Err(VmlinuxError::TooLarge);
    }
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

fn compression(payload: &[u8]) -> Result<Compression, VmlinuxError> {
    let has = |magic: &[u8]| payload.starts_with(magic);
    if has(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if has(&LZ4_LEGACY_MAGIC.to_le_bytes()) {
        Ok(Compression::Lz4Legacy)
    } else if has(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if has(b"\xfd7zXZ\x00") {
        Ok(Compression::Xz)
    } else if has(b"BZh") {
        Err(VmlinuxError::Unsupported("bzip2"))
    } else if has(&[0x89, b'L', b'Z', b'O']) {
        Err(VmlinuxError::Unsupported("LZO"))
    } else if has(&[0x5d, 0, 0]) {
        Err(VmlinuxError::Unsupported("LZMA"))
    } else {
        Err(VmlinuxError::UnknownFormat)
    }
}

/// Read all of `r`, failing past [`MAX_VMLINUX`] bytes.
fn read_capped(r: impl Read) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.take(MAX_VMLINUX as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() > MAX_VMLINUX {
        return Err(format!("more than {} MiB", MAX_VMLINUX >> 20));
    }
    Ok(out)
}

/// A Vec that refuses to grow past [`MAX_VMLINUX`].
struct CappedWriter(Vec<u8>);

impl Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len().saturating_add(buf.len()) > MAX_VMLINUX {
            return Err(std::io::Error::other(format!(
                "more than {} MiB",
                MAX_VMLINUX >> 20
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The legacy LZ4 format of `lz4 -l` (what the kernel's build uses): the magic, then
/// blocks of a little-endian compressed length and the compressed bytes, each block at most
/// 8 MiB decompressed. The kernel's build appends the decompressed size (4 bytes), which
/// reads as a block longer than what is left: the end.
fn lz4_legacy(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    let mut pos = 4;
    while let Some(len) = data.get(pos..pos + 4) {
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
        pos += 4;
        if len == LZ4_LEGACY_MAGIC {
            continue; // concatenated streams
        }
        let Some(src) = usize::try_from(len)
            .ok()
            .and_then(|l| data.get(pos..pos.checked_add(l)?))
        else {
            break;
        };
        if src.is_empty() {
            break;
        }
        let n = lz4_flex::block::decompress_into(src, &mut block).map_err(|e| e.to_string())?;
        if out.len() + n > MAX_VMLINUX {
            return Err(format!("more than {} MiB", MAX_VMLINUX >> 20));
        }
        out.extend_from_slice(&block[..n]);
        pos += src.len();
    }
    if out.is_empty() {
        return Err("no LZ4 block".into());
    }
    Ok(out)
}

#[cfg(test)]
#[path = "vmlinux_tests.rs"]
mod tests;
