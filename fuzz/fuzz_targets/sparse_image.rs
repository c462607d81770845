//! Shared by the vdi/vhd/vmdk/vhdx open targets: the fuzz input describes a sparse image
//! file as records `offset: u32 LE, len: u16 LE, bytes[len]` (a record with `len` 0 sets
//! the file length), so images whose metadata sits megabytes apart stay small inputs.
//! The file is opened as `format`, read in a few places, mapped, and (when `writable`)
//! written, zeroed and flushed. Nothing may panic.

use std::io::{Seek, SeekFrom, Write};

use block::{Format, OpenOptions};

/// Files stay below 64 MiB whatever the offsets say.
const MAX_FILE: u64 = 64 << 20;

fn build(data: &[u8], file: &mut std::fs::File) -> std::io::Result<()> {
    let mut rest = data;
    while rest.len() >= 6 {
        let offset = u64::from(u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]])) % MAX_FILE;
        let len = usize::from(u16::from_le_bytes([rest[4], rest[5]]));
        rest = &rest[6..];
        if len == 0 {
            file.set_len(offset)?;
            continue;
        }
        let n = len.min(rest.len());
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(&rest[..n])?;
        rest = &rest[n..];
    }
    Ok(())
}

pub fn exercise(data: &[u8], format: Format, writable: bool) {
    let file = tempfile::Builder::new()
        .tempfile_in("/dev/shm")
        .or_else(|_| tempfile::NamedTempFile::new());
    let Ok(mut file) = file else {
        return;
    };
    if build(data, file.as_file_mut()).is_err() {
        return;
    }
    let path = file.path().to_path_buf();
    let modes: &[bool] = if writable { &[true, false] } else { &[true] };
    for &read_only in modes {
        let opts = OpenOptions {
            read_only,
            format: Some(format),
            allow_external_backing: false,
        };
        let Ok(mut image) = block::open(&path, &opts) else {
            continue;
        };
        let size = image.size();
        let mut buf = vec![0u8; 70000];
        for offset in [0, size / 3, size.saturating_sub(70000)] {
            let len = (size - offset.min(size)).min(buf.len() as u64) as usize;
            let _ = image.read_at(&mut buf[..len], offset);
        }
        let _ = image.allocation(0, size.min(1 << 30));
        if !read_only && size > 0 {
            let _ = image.write_at(&[0x5a; 3000], size / 2);
            let _ = image.write_zeroes(0, size.min(200_000));
            let _ = image.discard(size / 4, size.min(3 << 20) / 2);
            let _ = image.flush();
            let mut buf = vec![0u8; 4096.min(size as usize)];
            let _ = image.read_at(&mut buf, size / 2);
        }
    }
}
