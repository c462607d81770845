//! bzImages made the way the kernel's build makes them: the ELF compressed by the real tool
//! (`gzip -9`, `lz4 -l -9`, `zstd -19`, `xz --check=crc32`), its decompressed size appended,
//! placed where the boot header's payload fields say.

use std::io::Write;
use std::process::{Command, Stdio};

use super::*;
use crate::decompress::Compression;

/// A fake 64-bit ELF kernel of `len` bytes, compressible but not trivially.
fn fake_elf(len: usize) -> Vec<u8> {
    let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
    let mut x: u32 = 12345;
    while elf.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let word = if x.is_multiple_of(4) { x } else { x >> 28 };
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.truncate(len);
    elf
}

/// `data` through `tool args`, as the kernel's build runs it, plus the size it appends.
fn compress(tool: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool} is missing ({e}): apt-get install {tool}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "{tool} {args:?}");
    let mut payload = out.stdout;
    payload.extend_from_slice(&(data.len() as u32).to_le_bytes());
    payload
}

/// A bzImage header (protocol 2.15, 3 setup sectors) and `payload` after the setup code.
fn bzimage(payload: &[u8]) -> Vec<u8> {
    let setup_sects = 3u8;
    let payload_offset = 0x3a0u32;
    let mut bz = vec![0u8; (usize::from(setup_sects) + 1) * 512 + payload_offset as usize];
    bz[0x1f1] = setup_sects;
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    bz[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
    bz[0x248..0x24c].copy_from_slice(&payload_offset.to_le_bytes());
    bz[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    bz.extend_from_slice(payload);
    bz.extend_from_slice(&[0xcc; 64]); // the decompressor's code and data after the payload
    bz
}

#[test]
fn every_kernel_compression_the_tools_make_decompresses_to_the_elf() {
    // LZ4 over 8 MiB: two blocks of its legacy format.
    for (tool, args, want, len) in [
        ("gzip", &["-9", "-c"][..], Compression::Gzip, 1 << 20),
        (
            "lz4",
            &["-l", "-9", "-c"][..],
            Compression::Lz4Legacy,
            9 << 20,
        ),
        ("zstd", &["-19", "-q", "-c"][..], Compression::Zstd, 1 << 20),
        ("xz", &["--check=crc32", "-c"][..], Compression::Xz, 1 << 20),
    ] {
        let elf = fake_elf(len);
        let bz = bzimage(&compress(tool, args, &elf));
        let (out, format) = extract_vmlinux(&bz).unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert_eq!(format, want);
        assert!(out == elf, "{tool}: the ELF differs");
    }
}

#[test]
fn bad_bzimages_are_refused_with_their_reason() {
    let elf = fake_elf(1 << 16);
    let good = bzimage(&compress("gzip", &["-c"], &elf));
    let err = |bz: &[u8]| extract_vmlinux(bz).unwrap_err().to_string();

    assert!(err(&[0u8; 100]).contains("not a bzImage"));
    assert!(err(&elf).contains("not a bzImage"));
    let mut old = good.clone();
    old[0x206..0x208].copy_from_slice(&0x206u16.to_le_bytes());
    assert!(err(&old).contains("0x206"), "{}", err(&old));
    let mut outside = good.clone();
    outside[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(err(&outside).contains("outside"));
    let truncated = &good[..good.len() - 200];
    assert!(err(truncated).contains("outside"));

    assert!(err(&bzimage(b"BZh91AY&SY...")).contains("bzip2"));
    assert!(err(&bzimage(b"\x5d\0\0\x80\0....")).contains("LZMA"));
    assert!(err(&bzimage(b"what is this")).contains("unknown compression"));

    let not_elf = bzimage(&compress("gzip", &["-c"], &[7u8; 4096]));
    assert!(err(&not_elf).contains("not a 64-bit ELF"));
    let mut lz4 = compress("lz4", &["-l", "-c"], &elf);
    let cut = lz4.len() / 2;
    lz4[cut..].fill(0xff);
    assert!(err(&bzimage(&lz4)).contains("payload: cannot decompress its LZ4"));
    let mut gz = compress("gzip", &["-c"], &elf);
    gz.truncate(gz.len() / 2);
    assert!(err(&bzimage(&gz)).contains("gzip"));
}
