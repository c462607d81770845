//! Decompressing what Linux's build compresses — a bzImage's payload, an initramfs — on the
//! host: gzip, the legacy LZ4 format of `lz4 -l`, zstd and xz, told apart by their magic.
//! The input comes from disk images (hostile): the output is capped by the caller's limit.

use std::io::{Read, Write};

/// The most one block of the legacy LZ4 format decompresses to.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;

/// A compression format vessel decompresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Lz4Legacy,
    Zstd,
    Xz,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Lz4Legacy => "LZ4",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        }
    }

    /// The format `data` starts with (its magic number).
    pub fn detect(data: &[u8]) -> Result<Compression, DecompressError> {
        let has = |magic: &[u8]| data.starts_with(magic);
        if has(&[0x1f, 0x8b]) {
            Ok(Compression::Gzip)
        } else if has(&LZ4_LEGACY_MAGIC.to_le_bytes()) {
            Ok(Compression::Lz4Legacy)
        } else if has(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Ok(Compression::Zstd)
        } else if has(b"\xfd7zXZ\x00") {
            Ok(Compression::Xz)
        } else if has(b"BZh") {
            Err(DecompressError::Unsupported("bzip2"))
        } else if has(&[0x89, b'L', b'Z', b'O']) {
            Err(DecompressError::Unsupported("LZO"))
        } else if has(&[0x5d, 0, 0]) {
            Err(DecompressError::Unsupported("LZMA"))
        } else {
            Err(DecompressError::UnknownFormat)
        }
    }
}

/// Why data did not decompress.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("compressed with {0}, which vessel does not decompress")]
    Unsupported(&'static str),
    #[error("an unknown compression format")]
    UnknownFormat,
    #[error("cannot decompress its {format} data: {reason}")]
    Corrupt {
        format: &'static str,
        reason: String,
    },
    #[error("over {} MiB decompressed", .0 >> 20)]
    TooLarge(usize),
}

/// Decompress `data` (its format from its magic), failing past `max` bytes of output. Data
/// after the compressed stream (the size the kernel's build appends) is ignored.
pub fn decompress(data: &[u8], max: usize) -> Result<(Vec<u8>, Compression), DecompressError> {
    let format = Compression::detect(data)?;
    let corrupt = |reason: String| DecompressError::Corrupt {
        format: format.name(),
        reason,
    };
    let out = match format {
        Compression::Gzip => read_capped(flate2::read::GzDecoder::new(data), max, corrupt)?,
        Compression::Zstd => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(data)
                .map_err(|e| corrupt(e.to_string()))?;
            read_capped(decoder, max, corrupt)?
        }
        Compression::Xz => {
            // The kernel's build appends the decompressed size after the stream's footer
            // (which ends in "YZ"); lzma-rs refuses data after the stream.
            let stream = match data.len().checked_sub(4) {
                Some(end) if !data.ends_with(b"YZ") && data[..end].ends_with(b"YZ") => &data[..end],
                _ => data,
            };
            let mut out = CappedWriter(Vec::new(), max);
            let result = lzma_rs::xz_decompress(&mut &*stream, &mut out);
            if out.0.len() > max {
                return Err(DecompressError::TooLarge(max));
            }
            result.map_err(|e| corrupt(e.to_string()))?;
            out.0
        }
        Compression::Lz4Legacy => lz4_legacy(data, max, corrupt)?,
    };
    Ok((out, format))
}

/// Read all of `r`, failing past `max` bytes.
fn read_capped(
    r: impl Read,
    max: usize,
    corrupt: impl Fn(String) -> DecompressError,
) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    r.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(e.to_string()))?;
    if out.len() > max {
        return Err(DecompressError::TooLarge(max));
    }
    Ok(out)
}

/// A Vec that stops growing past its limit (one byte over, so the caller can tell).
struct CappedWriter(Vec<u8>, usize);

impl Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len().saturating_add(buf.len()) > self.1 {
            self.0.push(0);
            return Err(std::io::Error::other("output limit"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The legacy LZ4 format: the magic, then blocks of a little-endian compressed length and
/// the compressed bytes, each at most 8 MiB decompressed. The size the kernel's build
/// appends reads as a block longer than what is left: the end.
fn lz4_legacy(
    data: &[u8],
    max: usize,
    corrupt: impl Fn(String) -> DecompressError,
) -> Result<Vec<u8>, DecompressError> {
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
        let n = lz4_flex::block::decompress_into(src, &mut block)
            .map_err(|e| corrupt(e.to_string()))?;
        if out.len() + n > max {
            return Err(DecompressError::TooLarge(max));
        }
        out.extend_from_slice(&block[..n]);
        pos += src.len();
    }
    if out.is_empty() {
        return Err(corrupt("no LZ4 block".into()));
    }
    Ok(out)
}
