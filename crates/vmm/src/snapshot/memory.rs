//! Guest RAM as one raw file: the regions in guest-address order, back to back.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use arch::GuestMemory;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::SnapshotError;

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Total bytes of guest RAM in `mem`.
pub fn memory_size(mem: &GuestMemory) -> u64 {
    mem.iter().map(|r| r.len()).sum()
}

/// Writes all guest RAM to `path`, a new file (nothing, not even a symlink, may be there);
/// returns the bytes written.
pub fn save_memory(mem: &GuestMemory, path: &Path) -> Result<u64, SnapshotError> {
    let mut file = super::output::create_new(path)?;
    for region in mem.iter() {
        let len = region.len() as usize;
        // SAFETY: the region maps `len` bytes at `as_ptr()` for as long as `mem` lives, and
        // every vCPU is paused, so nothing writes to it while it is read here.
        let bytes = unsafe { std::slice::from_raw_parts(region.as_ptr().cast_const(), len) };
        file.write_all(bytes).map_err(io_err(path))?;
    }
    file.sync_all().map_err(io_err(path))?;
    Ok(memory_size(mem))
}

/// Fills guest RAM from `path`, whose size must be exactly the RAM's.
pub fn load_memory(mem: &GuestMemory, path: &Path) -> Result<u64, SnapshotError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let expected = memory_size(mem);
    if file_len != expected {
        return Err(SnapshotError::MemorySize {
            file: file_len,
            expected,
        });
    }
    for region in mem.iter() {
        let len = region.len() as usize;
        // SAFETY: the region maps `len` writable bytes at `as_ptr()` for as long as `mem`
        // lives, and no vCPU of this VM has run yet, so nothing else accesses them.
        let bytes = unsafe { std::slice::from_raw_parts_mut(region.as_ptr(), len) };
        file.read_exact(bytes).map_err(io_err(path))?;
    }
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    fn memory() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x2000), (GuestAddress(0x10000), 0x1000)])
            .unwrap()
    }

    #[test]
    fn round_trip_and_size_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mem");
        let mem = memory();
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x1ffc))
            .unwrap();
        mem.write_obj(0x1234_u16, GuestAddress(0x10ffe)).unwrap();
        assert_eq!(save_memory(&mem, &path).unwrap(), 0x3000);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0x3000);
        let back = memory();
        assert_eq!(load_memory(&back, &path).unwrap(), 0x3000);
        assert_eq!(
            back.read_obj::<u32>(GuestAddress(0x1ffc)).unwrap(),
            0xdead_beef
        );
        assert_eq!(back.read_obj::<u16>(GuestAddress(0x10ffe)).unwrap(), 0x1234);
        std::fs::write(&path, [0u8; 0x2fff]).unwrap();
        assert!(matches!(
            load_memory(&back, &path),
            Err(SnapshotError::MemorySize {
                file: 0x2fff,
                expected: 0x3000
            })
        ));
    }
}
