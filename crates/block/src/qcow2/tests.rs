//! Unit tests of the qcow2 driver against an in-memory reference.

use std::path::{Path, PathBuf};

use crate::{Allocation, CreateOptions, DiskImage, Format, OpenOptions};

fn create_qcow2(dir: &Path, name: &str, size: u64, cluster: u64) -> PathBuf {
    let path = dir.join(name);
    crate::create(
        &path,
        Format::Qcow2,
        size,
        &CreateOptions {
            cluster_size: Some(cluster),
            ..CreateOptions::default()
        },
    )
    .unwrap();
    path
}

fn open_rw(path: &Path) -> Box<dyn DiskImage> {
    crate::open(path, &OpenOptions::default()).unwrap()
}

fn assert_clean(path: &Path) {
    let report = crate::check(path, None, false, false).unwrap();
    assert_eq!(report.error_count, 0, "{:?}", report.errors);
    assert_eq!(report.leaked_clusters, 0);
}

/// Tiny deterministic generator for test patterns.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn random_io(path: &Path, size: u64, seed: u64, ops: usize) -> Vec<u8> {
    let mut model = vec![0u8; size as usize];
    let mut img = open_rw(path);
    let mut rng = Lcg(seed);
    for i in 0..ops {
        let off = rng.next() % size;
        let len = (rng.next() % 20000 + 1).min(size - off);
        match rng.next() % 8 {
            0 => {
                img.write_zeroes(off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            1 => {
                img.discard(off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            2 => img.flush().unwrap(),
            _ => {
                let data: Vec<u8> = (0..len).map(|j| (i as u64 * 31 + j) as u8 | 1).collect();
                img.write_at(&data, off).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
        }
    }
    let mut back = vec![0u8; size as usize];
    img.read_at(&mut back, 0).unwrap();
    assert!(back == model, "content differs before reopen");
    model
}

#[test]
fn fresh_image_is_empty_and_clean() {
    let dir = tempfile::tempdir().unwrap();
    let path = create_qcow2(dir.path(), "a.qcow2", 8 << 30, 65536);
    assert_eq!(crate::detect(&path).unwrap(), Format::Qcow2);
    let mut img = open_rw(&path);
    assert_eq!(img.size(), 8 << 30);
    assert!(img.allocated_bytes().unwrap() < 1 << 20);
    let map = img.allocation(0, 8 << 30).unwrap();
    assert_eq!(map.len(), 1);
    assert_eq!(map[0].state, Allocation::Zero);
    let mut buf = vec![1u8; 4096];
    img.read_at(&mut buf, 12345).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    drop(img);
    assert_clean(&path);
}

#[test]
fn random_writes_read_back_and_check_clean() {
    let dir = tempfile::tempdir().unwrap();
    for (cluster, seed) in [(65536u64, 1u64), (4096, 2), (512, 3)] {
        let size = 3 << 20;
        let path = create_qcow2(dir.path(), &format!("c{cluster}.qcow2"), size, cluster);
        let model = random_io(&path, size, seed, 400);
        assert_clean(&path);
        let mut img = open_rw(&path);
        let mut back = vec![0u8; size as usize];
        img.read_at(&mut back, 0).unwrap();
        assert!(
            back == model,
            "content differs after reopen (cluster {cluster})"
        );
    }
}

#[test]
fn small_clusters_grow_the_refcount_table() {
    let dir = tempfile::tempdir().unwrap();
    // 512-byte clusters: a refcount block covers 128 KiB and the first table 8 MiB.
    let size = 24 << 20;
    let path = create_qcow2(dir.path(), "s.qcow2", size, 512);
    let mut img = open_rw(&path);
    let chunk = vec![0x5au8; 1 << 20];
    for i in 0..(size >> 20) {
        img.write_at(&chunk, i << 20).unwrap();
    }
    img.flush().unwrap();
    drop(img);
    assert_clean(&path);
    let mut img = open_rw(&path);
    let mut back = vec![0u8; 1 << 20];
    img.read_at(&mut back, size - (1 << 20)).unwrap();
    assert!(back.iter().all(|&b| b == 0x5a));
}

#[test]
fn backing_chain_reads_through_and_copies_on_write() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    crate::create(&base, Format::Raw, 1 << 20, &CreateOptions::default()).unwrap();
    let mut b = crate::open(&base, &OpenOptions::default()).unwrap();
    b.write_at(&vec![0x11u8; 1 << 20], 0).unwrap();
    drop(b);
    let top = dir.path().join("top.qcow2");
    let opts = CreateOptions {
        backing: Some((PathBuf::from("base.raw"), None)),
        ..CreateOptions::default()
    };
    crate::create(&top, Format::Qcow2, 1 << 20, &opts).unwrap();
    let mut img = open_rw(&top);
    assert_eq!(img.backing().unwrap().format(), Format::Raw);
    img.write_at(&[0x22u8; 100], 70000).unwrap();
    img.write_zeroes(65536 * 3, 65536).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    img.read_at(&mut buf, 0).unwrap();
    for (i, &b) in buf.iter().enumerate() {
        let want = if (70000..70100).contains(&i) {
            0x22
        } else if (65536 * 3..65536 * 4).contains(&i) {
            0
        } else {
            0x11
        };
        assert_eq!(b, want, "byte {i}");
    }
    let map = img.allocation(0, 1 << 20).unwrap();
    assert!(map.iter().any(|e| e.state == Allocation::Backing));
    drop(img);
    assert_clean(&top);
}

#[test]
fn backing_loop_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    create_qcow2(dir.path(), "b.qcow2", 1 << 20, 65536);
    let opts = CreateOptions {
        backing: Some((PathBuf::from("b.qcow2"), Some(Format::Qcow2))),
        ..CreateOptions::default()
    };
    crate::create(&a, Format::Qcow2, 1 << 20, &opts).unwrap();
    // Rewrite b to point at a.
    std::fs::remove_file(&b).unwrap();
    let opts = CreateOptions {
        backing: Some((PathBuf::from("a.qcow2"), Some(Format::Qcow2))),
        ..CreateOptions::default()
    };
    crate::create(&b, Format::Qcow2, 1 << 20, &opts).unwrap();
    let err = crate::open(&a, &OpenOptions::default()).err().unwrap();
    assert!(err.to_string().contains("loop"), "{err}");
}

#[test]
fn resize_grows_l1_and_refuses_unsafe_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let path = create_qcow2(dir.path(), "r.qcow2", 1 << 20, 512);
    let mut img = open_rw(&path);
    img.write_at(&[7u8; 4096], 8192).unwrap();
    img.resize(64 << 20).unwrap();
    img.write_at(&[9u8; 4096], (64 << 20) - 4096).unwrap();
    assert!(img.resize(1 << 20).is_err());
    let mut buf = vec![0u8; 4096];
    img.read_at(&mut buf, 8192).unwrap();
    assert!(buf.iter().all(|&b| b == 7));
    drop(img);
    assert_clean(&path);
    let mut img = open_rw(&path);
    assert_eq!(img.size(), 64 << 20);
    img.read_at(&mut buf, (64 << 20) - 4096).unwrap();
    assert!(buf.iter().all(|&b| b == 9));
    img.discard((64 << 20) - 65536, 65536).unwrap();
    img.resize(32 << 20).unwrap();
    drop(img);
    assert_clean(&path);
}

#[test]
fn crash_leaks_are_repaired_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = create_qcow2(dir.path(), "d.qcow2", 4 << 20, 65536);
    let mut img = open_rw(&path);
    img.write_at(&[3u8; 200000], 0).unwrap();
    img.flush().unwrap();
    img.write_at(&[4u8; 200000], 1 << 20).unwrap();
    // Simulate a crash: refcounts reach the disk, the L2 update does not.
    std::mem::forget(img);
    let report = crate::check(&path, None, false, false).unwrap();
    assert_eq!(report.error_count, 0, "{:?}", report.errors);
    let img = open_rw(&path);
    drop(img);
    assert_clean(&path);
    let mut img = open_rw(&path);
    let mut buf = vec![0u8; 200000];
    img.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 3));
}

#[test]
fn corrupt_images_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = create_qcow2(dir.path(), "x.qcow2", 16 << 20, 65536);
    let mut img = open_rw(&path);
    img.write_at(&[1u8; 300000], 0).unwrap();
    drop(img);
    let good = std::fs::read(&path).unwrap();
    let mut rng = Lcg(99);
    for round in 0..300 {
        let mut bytes = good.clone();
        match round % 3 {
            0 => bytes.truncate((rng.next() as usize) % good.len()),
            _ => {
                for _ in 0..4 {
                    let at = (rng.next() as usize) % bytes.len().min(4 << 16);
                    bytes[at] = rng.next() as u8;
                }
            }
        }
        let p = dir.path().join("fuzzed.qcow2");
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(mut img) = crate::open(
            &p,
            &OpenOptions {
                read_only: true,
                format: Some(Format::Qcow2),
                allow_external_backing: false,
            },
        ) {
            let mut buf = vec![0u8; 65536 * 3];
            let _ = img.read_at(&mut buf, 0);
            let _ = img.allocation(0, img.size());
        }
        let _ = crate::check(&p, Some(Format::Qcow2), false, false);
    }
}

#[test]
fn l2_entries_pointing_at_metadata_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = create_qcow2(dir.path(), "m.qcow2", 4 << 20, 65536);
    let mut img = open_rw(&path);
    img.write_at(&[1u8; 4096], 0).unwrap();
    drop(img);
    // Layout: header, refcount table, refcount block, L1, then the L2 table at cluster 4.
    let mut bytes = std::fs::read(&path).unwrap();
    let l2 = 4 * 65536;
    let evil = (65536u64 | (1 << 63)).to_be_bytes(); // the refcount table
    bytes[l2..l2 + 8].copy_from_slice(&evil);
    std::fs::write(&path, &bytes).unwrap();
    let mut img = open_rw(&path);
    let err = img.write_at(&[2u8; 512], 0).unwrap_err();
    assert!(err.to_string().contains("metadata"), "{err}");
    let err = img.discard(0, 65536).unwrap_err();
    assert!(err.to_string().contains("metadata"), "{err}");
    drop(img);
    assert_eq!(
        std::fs::read(&path).unwrap()[65536..65536 * 2],
        bytes[65536..65536 * 2]
    );
}

#[test]
fn tiny_caches_evict_in_crash_safe_order() {
    use super::cache::TableCache;
    use crate::workload::Workload;
    let dir = tempfile::tempdir().unwrap();
    let size = 4u64 << 20;
    let path = create_qcow2(dir.path(), "e.qcow2", size, 512);
    let mut img = super::Qcow2::open(&path, &OpenOptions::default()).unwrap();
    img.l2_cache = TableCache::new(2);
    img.rc.set_cache_capacity(2);
    let w = Workload {
        seed: 77,
        size,
        max_len: 40000,
    };
    let mut model = vec![0u8; size as usize];
    let mut flushed = model.clone();
    let mut touched = vec![false; size as usize];
    let snapshot = dir.path().join("snap.qcow2");
    for i in 0..240u64 {
        w.run(i, &mut img).unwrap();
        w.apply(i, &mut model);
        let (off, len) = w.op(i).range();
        touched[off as usize..(off + len) as usize].fill(true);
        if i % 12 == 11 {
            img.flush().unwrap();
            flushed.clone_from(&model);
            touched.fill(false);
        }
        if i % 5 == 2 {
            // What a SIGKILL now would leave: the file as it is.
            std::fs::copy(&path, &snapshot).unwrap();
            let report = crate::check(&snapshot, None, false, false).unwrap();
            assert_eq!(report.error_count, 0, "op {i}: {:?}", report.errors);
            let mut back = vec![0u8; size as usize];
            let mut reopened = open_rw(&snapshot);
            reopened.read_at(&mut back, 0).unwrap();
            drop(reopened);
            assert_clean(&snapshot);
            let bad = (0..size as usize).find(|&b| !touched[b] && back[b] != flushed[b]);
            assert!(bad.is_none(), "op {i}: flushed byte {bad:?} lost");
        }
    }
    drop(img);
    assert_clean(&path);
    let mut back = vec![0u8; size as usize];
    open_rw(&path).read_at(&mut back, 0).unwrap();
    assert!(back == model);
}
