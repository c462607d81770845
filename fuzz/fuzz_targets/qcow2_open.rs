//! Open arbitrary bytes as a qcow2 image (read-only and read-write), read a few ranges,
//! write once, walk the allocation map and run the consistency check. Must never panic.
#![no_main]

use std::io::Write;

use block::{Format, OpenOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // tmpfs when available: the driver syncs on flush and on close.
    let file = tempfile::Builder::new()
        .tempfile_in("/dev/shm")
        .or_else(|_| tempfile::NamedTempFile::new());
    let Ok(mut file) = file else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    let path = file.path().to_path_buf();
    for read_only in [true, false] {
        let opts = OpenOptions {
            read_only,
            format: Some(Format::Qcow2),
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
            let _ = image.flush();
        }
    }
    let _ = block::check(&path, Some(Format::Qcow2), false, false);
});
