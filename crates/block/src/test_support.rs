//! Helpers for the VDI/VHD/VMDK/VHDX driver tests: temporary directories, a seeded random
//! generator, qemu-img / qemu-io wrappers and a random read/write workout against a model.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::DiskImage;

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vessel-block-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xorshift64* — deterministic test data.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

/// Run a qemu tool; panics with its stderr when it fails.
pub(crate) fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `qemu-img check -f fmt` must pass.
pub(crate) fn qemu_check(path: &Path, fmt: &str) {
    run("qemu-img", &["check", "-f", fmt, path_str(path)]);
}

/// The image's virtual disk as qemu-img converts it to raw.
pub(crate) fn qemu_raw(path: &Path, fmt: &str) -> Vec<u8> {
    let out = path.with_extension("qemu-raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            fmt,
            "-O",
            "raw",
            path_str(path),
            path_str(&out),
        ],
    );
    let data = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    data
}

/// Write the qemu-io pattern used by the "qemu writes, vessel reads" tests.
pub(crate) fn qemu_io_fill(path: &Path, fmt: &str) {
    run(
        "qemu-io",
        &[
            "-f",
            fmt,
            "-c",
            "write -P 0xab 0 64k",
            "-c",
            "write -P 0x11 3M 100k",
            "-c",
            "write -P 0x5a 1536k 4k",
            "-c",
            "write -P 0xc3 5000k 1k",
            path_str(path),
        ],
    );
}

/// The whole virtual disk as vessel reads it.
pub(crate) fn read_all(img: &mut dyn DiskImage) -> Vec<u8> {
    let mut data = vec![0u8; img.size() as usize];
    // Read in odd-sized pieces to cross block boundaries at unaligned places.
    let mut pos = 0usize;
    let piece = 300_007usize;
    while pos < data.len() {
        let n = piece.min(data.len() - pos);
        img.read_at(&mut data[pos..pos + n], pos as u64).unwrap();
        pos += n;
    }
    data
}

/// Random writes (partial blocks, block-crossing, some zero writes and discards) applied to
/// both `img` and `model`; then the whole disk is read back and compared.
pub(crate) fn workout(img: &mut dyn DiskImage, model: &mut [u8], rng: &mut Rng, ops: usize) {
    let size = model.len() as u64;
    for _ in 0..ops {
        let max = if rng.below(4) == 0 { 3 << 20 } else { 70_000 };
        let len = 1 + rng.below(max);
        let len = len.min(size);
        let off = rng.below(size - len + 1);
        let (o, l) = (off as usize, len as usize);
        match rng.below(10) {
            0 => {
                img.write_zeroes(off, len).unwrap();
                model[o..o + l].fill(0);
            }
            1 => {
                img.discard(off, len).unwrap();
                model[o..o + l].fill(0);
            }
            _ => {
                let mut buf = vec![0u8; l];
                rng.fill(&mut buf);
                img.write_at(&buf, off).unwrap();
                model[o..o + l].copy_from_slice(&buf);
            }
        }
    }
    img.flush().unwrap();
    let data = read_all(img);
    if let Some(i) = data.iter().zip(model.iter()).position(|(a, b)| a != b) {
        panic!("image content differs from the model first at byte {i}");
    }
}

/// Allocation map invariants: covers the disk exactly, every Zero extent reads as zeroes.
pub(crate) fn check_allocation(img: &mut dyn DiskImage) {
    let size = img.size();
    let map = img.allocation(0, size).unwrap();
    let mut pos = 0;
    for e in &map {
        assert_eq!(e.offset, pos);
        assert!(e.len > 0);
        if e.state == crate::Allocation::Zero {
            let mut buf = vec![0u8; e.len.min(8 << 20) as usize];
            img.read_at(&mut buf, e.offset).unwrap();
            assert!(buf.iter().all(|&b| b == 0), "zero extent {e:?} holds data");
        }
        pos += e.len;
    }
    assert_eq!(pos, size);
}
