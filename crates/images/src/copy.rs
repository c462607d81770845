//! Copy an image file into the store: sparse (runs of zero blocks become holes) and hashed
//! (sha256) in one pass.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

const BLOCK: usize = 64 * 1024;

/// Copy all of `src` to `dst` (an empty file), leaving zero blocks as holes; returns the
/// sha256 of the bytes copied, in hex, and their count.
pub fn sparse_copy_hashed(src: &mut File, dst: &mut File) -> std::io::Result<(String, u64)> {
    sparse_copy_hashed_from(src, dst)
}

/// [`sparse_copy_hashed`] from any reader (a tar entry, say).
pub fn sparse_copy_hashed_from(
    src: &mut impl Read,
    dst: &mut File,
) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let n = read_full(src, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if buf[..n].iter().all(|b| *b == 0) {
            dst.seek(SeekFrom::Current(n as i64))?;
        } else {
            dst.write_all(&buf[..n])?;
        }
        total += n as u64;
    }
    dst.set_len(total)?;
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, total))
}

/// Read until `buf` is full or the file ends.
fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn copies_bytes_keeps_holes_and_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let mut data = vec![0u8; 4 << 20];
        data[0] = 1;
        data[(4 << 20) - 1] = 2;
        std::fs::write(&src_path, &data).unwrap();
        let mut src = File::open(&src_path).unwrap();
        let dst_path = dir.path().join("dst");
        let mut dst = File::create(&dst_path).unwrap();
        let (hash, n) = sparse_copy_hashed(&mut src, &mut dst).unwrap();
        assert_eq!(n, 4 << 20);
        assert_eq!(std::fs::read(&dst_path).unwrap(), data);
        assert_eq!(hash, format!("{:x}", Sha256::digest(&data)));
        // Only the two data blocks are allocated (the file system may round up).
        assert!(std::fs::metadata(&dst_path).unwrap().blocks() * 512 < 1 << 20);
    }
}
