use super::*;
use std::os::unix::fs::PermissionsExt;
use vm_memory::Bytes;

type Memory = GuestMemoryMmap<()>;

const RANGES: [(GuestAddress, usize); 2] =
    [(GuestAddress(0), 0x2000), (GuestAddress(0x10000), 0x1000)];

fn memory() -> Memory {
    Memory::from_ranges(&RANGES).unwrap()
}

/// A memory file of both ranges with a word at the end of each.
fn saved(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("mem");
    let mem = memory();
    mem.write_obj(0xdead_beef_u32, GuestAddress(0x1ffc))
        .unwrap();
    mem.write_obj(0x1234_u16, GuestAddress(0x10ffe)).unwrap();
    assert_eq!(save_memory(&mem, None, &path).unwrap(), 0x3000);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0x3000);
    path
}

fn restore(path: &Path, copy: bool) -> Result<(Memory, MemoryLoad), SnapshotError> {
    restore_memory_with(&RANGES, path, copy)
}

fn check_words(mem: &Memory) {
    assert_eq!(
        mem.read_obj::<u32>(GuestAddress(0x1ffc)).unwrap(),
        0xdead_beef
    );
    assert_eq!(mem.read_obj::<u16>(GuestAddress(0x10ffe)).unwrap(), 0x1234);
}

#[test]
fn a_file_of_our_own_is_mapped_copy_on_write_at_each_ranges_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let (mem, how) = restore(&path, false).unwrap();
    assert_eq!(how, MemoryLoad::Mapped);
    check_words(&mem);
    let regions: Vec<_> = mem.iter().collect();
    let offsets: Vec<_> = regions
        .iter()
        .map(|r| r.file_offset().unwrap().start())
        .collect();
    assert_eq!(offsets, [0, 0x2000]);
    assert!(regions.iter().all(|r| r.flags() & libc::MAP_PRIVATE != 0));
    // The guest's writes stay in the mapping; the file is never written.
    let before = std::fs::read(&path).unwrap();
    mem.write_obj(0x5555_5555_u32, GuestAddress(0x10)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn save_load_save_gives_the_same_file_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let first = saved(dir.path());
    for (copy, name) in [(false, "mapped"), (true, "copied")] {
        let (mem, how) = restore(&first, copy).unwrap();
        assert_eq!(how == MemoryLoad::Mapped, !copy);
        let again = dir.path().join(name);
        save_memory(&mem, None, &again).unwrap();
        assert_eq!(
            std::fs::read(&again).unwrap(),
            std::fs::read(&first).unwrap()
        );
    }
}

#[test]
fn a_file_others_may_write_is_copied_and_a_later_truncation_cannot_reach_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o662)).unwrap();
    let (mem, how) = restore(&path, false).unwrap();
    assert_eq!(how, MemoryLoad::Copied(CopyReason::WritableByOthers));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    check_words(&mem);
}

#[test]
fn the_load_mode_follows_owner_and_mode() {
    assert_eq!(
        load_mode_of(1000, 0o100600, 1000, false),
        MemoryLoad::Mapped
    );
    assert_eq!(
        load_mode_of(1000, 0o100644, 1000, false),
        MemoryLoad::Mapped
    );
    assert_eq!(
        load_mode_of(0, 0o100600, 1000, false),
        MemoryLoad::Copied(CopyReason::OtherOwner)
    );
    assert_eq!(
        load_mode_of(1000, 0o100620, 1000, false),
        MemoryLoad::Copied(CopyReason::WritableByOthers)
    );
    assert_eq!(
        load_mode_of(1000, 0o100602, 1000, false),
        MemoryLoad::Copied(CopyReason::WritableByOthers)
    );
    assert_eq!(
        load_mode_of(1000, 0o100600, 1000, true),
        MemoryLoad::Copied(CopyReason::Requested)
    );
}

#[test]
fn a_file_of_another_size_is_refused_either_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short");
    std::fs::write(&path, [0u8; 0x2fff]).unwrap();
    for copy in [false, true] {
        assert!(matches!(
            restore(&path, copy),
            Err(SnapshotError::MemorySize {
                file: 0x2fff,
                expected: 0x3000
            })
        ));
    }
    std::fs::write(&path, [0u8; 0x4000]).unwrap();
    assert!(matches!(
        restore(&path, false),
        Err(SnapshotError::MemorySize { file: 0x4000, .. })
    ));
}

#[test]
fn only_a_regular_file_is_loaded_never_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let target = saved(dir.path());
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = restore(&link, false).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let err = restore(dir.path(), false).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    // A FIFO is refused without blocking on its open.
    let fifo = dir.path().join("fifo");
    let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo writes no memory of ours.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    let err = restore(&fifo, false).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    let err = restore(&dir.path().join("absent"), false)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, SnapshotError::Io { .. }), "{err}");
}

#[test]
fn zero_chunks_are_holes_that_read_back_as_zero() {
    let dir = tempfile::tempdir().unwrap();
    let ranges = [
        (GuestAddress(0), 4 * SPARSE_CHUNK),
        (GuestAddress(0x100_0000), SPARSE_CHUNK),
    ];
    let mem = Memory::from_ranges(&ranges).unwrap();
    // Data in the second chunk only (at an odd offset), and at the last byte of all.
    mem.write_obj(0x77_u8, GuestAddress(SPARSE_CHUNK as u64 + 3))
        .unwrap();
    mem.write_obj(0x99_u8, GuestAddress(0x100_0000 + SPARSE_CHUNK as u64 - 1))
        .unwrap();
    let path = dir.path().join("sparse");
    save_memory(&mem, None, &path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 5 * SPARSE_CHUNK as u64);
    assert!(
        meta.blocks() * 512 <= 2 * SPARSE_CHUNK as u64 + 8192,
        "only two chunks are written: {} blocks",
        meta.blocks()
    );
    let bytes = std::fs::read(&path).unwrap();
    let mut expected = vec![0u8; 5 * SPARSE_CHUNK];
    expected[SPARSE_CHUNK + 3] = 0x77;
    expected[5 * SPARSE_CHUNK - 1] = 0x99;
    assert!(bytes == expected);
    assert!(
        is_zero(&[0u8; 33]) && !is_zero(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    );
}

/// With the page map, untouched chunks of anonymous RAM are holes without being read, and
/// what the guest wrote (in any page of a chunk) is saved; RAM mapped from a memory file is
/// saved whole, touched or not.
#[test]
fn the_page_map_skips_only_untouched_anonymous_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let ranges = [(GuestAddress(0), 0x40_0000)];
    let mem = Memory::from_ranges(&ranges).unwrap();
    mem.write_obj(0x5a5a_u16, GuestAddress(0x12_3456)).unwrap();
    mem.write_obj(0xa5_u8, GuestAddress(0x3f_ffff)).unwrap();
    let map = crate::page_map::PageMap::open().expect("/proc/self/pagemap");
    let path = dir.path().join("anon");
    save_memory(&mem, Some(&map), &path).unwrap();
    let (back, _) = restore_memory_with::<()>(&ranges, &path, true).unwrap();
    assert_eq!(
        back.read_obj::<u16>(GuestAddress(0x12_3456)).unwrap(),
        0x5a5a
    );
    assert_eq!(back.read_obj::<u8>(GuestAddress(0x3f_ffff)).unwrap(), 0xa5);
    // Mapped from that file (copy-on-write): no page of it is present yet, all are saved.
    let (mapped, _) = restore_memory_with::<()>(&ranges, &path, false).unwrap();
    let again = dir.path().join("mapped");
    save_memory(&mapped, Some(&map), &again).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&again).unwrap()
    );
}
