//! Tests of the streamOptimized writer: qemu-img reads, checks and compares what it writes,
//! and vessel's own reader reads it back.

use super::*;
use crate::test_support::{path_str, qemu_check, qemu_raw, read_all, run, workout, Rng, TempDir};
use crate::CreateOptions;

fn opts(read_only: bool, format: Format) -> OpenOptions {
    OpenOptions {
        read_only,
        format: Some(format),
        allow_external_backing: false,
    }
}

/// A qcow2 source with scattered data across more than one grain table (32 MiB each),
/// an odd tail, and a zero hole between.
fn source(dir: &TempDir, size: u64) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("src.qcow2");
    crate::create(&path, Format::Qcow2, size, &CreateOptions::default()).unwrap();
    let mut img = crate::open(&path, &opts(false, Format::Qcow2)).unwrap();
    let mut model = vec![0u8; size as usize];
    workout(img.as_mut(), &mut model, &mut Rng::new(77), 60);
    img.flush().unwrap();
    (path, model)
}

#[test]
fn stream_optimized_is_what_qemu_reads_and_compares_equal() {
    let dir = TempDir::new("vmdk-stream");
    let size = (70 << 20) + 3 * 512;
    let (src, model) = source(&dir, size);
    let dest = dir.join("out.vmdk");
    let mut img = crate::open(&src, &opts(true, Format::Qcow2)).unwrap();
    let written = write_stream_optimized(img.as_mut(), &dest).unwrap();
    assert_eq!(written, std::fs::metadata(&dest).unwrap().len());
    let info = run("qemu-img", &["info", "-f", "vmdk", path_str(&dest)]);
    assert!(info.contains("streamOptimized"), "{info}");
    qemu_check(&dest, "vmdk");
    run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "vmdk",
            "-F",
            "qcow2",
            path_str(&dest),
            path_str(&src),
        ],
    );
    assert!(qemu_raw(&dest, "vmdk") == model);
    let mut back = open(&dest, &opts(true, Format::Vmdk)).unwrap();
    assert_eq!(back.size(), size);
    assert!(read_all(back.as_mut()) == model);
}

#[test]
fn empty_disk_has_no_grains_and_refuses_existing_dest() {
    let dir = TempDir::new("vmdk-stream-empty");
    let src = dir.join("empty.qcow2");
    crate::create(&src, Format::Qcow2, 64 << 20, &CreateOptions::default()).unwrap();
    let dest = dir.join("e.vmdk");
    let mut img = crate::open(&src, &opts(true, Format::Qcow2)).unwrap();
    let written = write_stream_optimized(img.as_mut(), &dest).unwrap();
    // Header + descriptor padded to a grain, GD marker + GD, footer marker + footer, EOS.
    assert!(written < 80 << 10, "{written} bytes for an empty disk");
    qemu_check(&dest, "vmdk");
    let raw = qemu_raw(&dest, "vmdk");
    assert!(raw.len() == 64 << 20 && raw.iter().all(|&b| b == 0));
    let err = write_stream_optimized(img.as_mut(), &dest).unwrap_err();
    assert!(err.to_string().contains("e.vmdk"), "{err}");
}
