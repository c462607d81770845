//! Hidden tools: a random-read benchmark and the crash-test writer.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use block::workload::Workload;
use block::OpenOptions;

/// Read `count` random `block_size`-aligned blocks and print the throughput.
pub fn bench_read(path: &Path, block_size: usize, count: u64) -> anyhow::Result<i32> {
    let mut image = block::open(
        path,
        &OpenOptions {
            read_only: true,
            format: None,
            allow_external_backing: false,
        },
    )?;
    let blocks = image.size() / block_size as u64;
    anyhow::ensure!(blocks > 0, "image smaller than one block");
    let mut buf = vec![0u8; block_size];
    let mut x: u64 = 0x1234_5678;
    let start = Instant::now();
    for _ in 0..count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        image.read_at(&mut buf, (x % blocks) * block_size as u64)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} {:.0} IOPS {:.1} MiB/s",
        image.format(),
        count as f64 / secs,
        count as f64 * block_size as f64 / secs / (1 << 20) as f64
    );
    Ok(0)
}

/// Run the deterministic workload on `path`, flushing every `ops_per_flush` operations and
/// recording the last covered operation in `log` after each completed flush.
pub fn stress(
    path: &Path,
    seed: u64,
    log: &Path,
    ops_per_flush: u64,
    max_len: u64,
    ops: Option<u64>,
) -> anyhow::Result<i32> {
    let mut image = block::open(path, &OpenOptions::default())?;
    let workload = Workload {
        seed,
        size: image.size(),
        max_len,
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut i = 0;
    while ops.is_none_or(|n| i < n) {
        workload.run(i, image.as_mut())?;
        if (i + 1) % ops_per_flush.max(1) == 0 {
            image.flush()?;
            writeln!(log, "{i}")?;
        }
        i += 1;
    }
    image.flush()?;
    Ok(0)
}
