//! `vessel disk convert`: copy the flattened content of an image into a new sparse image.

use std::io::IsTerminal;
use std::path::Path;

use block::{Allocation, CreateOptions, DiskImage, Format, OpenOptions};
use indicatif::{ProgressBar, ProgressStyle};

/// Bytes read per request.
const CHUNK: usize = 2 << 20;
/// Granularity of zero detection: all-zero blocks of this size are not written.
const ZERO_BLOCK: usize = 4096;

fn is_zero(buf: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: u64 has no invalid bit patterns; align_to only reinterprets the
        // aligned middle part of the byte slice.
        unsafe { buf.align_to::<u64>() }
    };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

/// Copy `src` into a new image `dst`; returns its virtual size.
pub fn convert(
    src: &Path,
    dst: &Path,
    format: Format,
    source_opts: &OpenOptions,
    cluster_size: Option<u64>,
) -> anyhow::Result<u64> {
    let mut source = block::open(src, source_opts)?;
    let size = source.size();
    let opts = CreateOptions {
        cluster_size,
        ..CreateOptions::default()
    };
    block::create(dst, format, size, &opts)?;
    let result = (|| -> anyhow::Result<()> {
        let mut target = block::open(
            dst,
            &OpenOptions {
                read_only: false,
                format: Some(format),
                allow_external_backing: false,
            },
        )?;
        copy(source.as_mut(), target.as_mut())?;
        target.flush()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    result.map(|()| size)
}

fn copy(source: &mut dyn DiskImage, target: &mut dyn DiskImage) -> anyhow::Result<()> {
    let size = source.size();
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut buf = vec![0u8; CHUNK];
    let mut window = 0;
    while window < size {
        let window_len = (size - window).min(1 << 30);
        for extent in source.allocation(window, window_len)? {
            if extent.state == Allocation::Zero {
                bar.inc(extent.len);
                continue;
            }
            let mut pos = extent.offset;
            let end = extent.offset + extent.len;
            while pos < end {
                let n = (end - pos).min(CHUNK as u64) as usize;
                source.read_at(&mut buf[..n], pos)?;
                write_nonzero(target, &buf[..n], pos)?;
                pos += n as u64;
                bar.inc(n as u64);
            }
        }
        window += window_len;
    }
    bar.finish_and_clear();
    Ok(())
}

/// Write the runs of `data` that are not all-zero blocks.
fn write_nonzero(target: &mut dyn DiskImage, data: &[u8], offset: u64) -> anyhow::Result<()> {
    let mut run_start: Option<usize> = None;
    let mut at = 0;
    while at < data.len() {
        let n = ZERO_BLOCK.min(data.len() - at);
        let zero = is_zero(&data[at..at + n]);
        match (zero, run_start) {
            (true, Some(start)) => {
                target.write_at(&data[start..at], offset + start as u64)?;
                run_start = None;
            }
            (false, None) => run_start = Some(at),
            _ => {}
        }
        at += n;
    }
    if let Some(start) = run_start {
        target.write_at(&data[start..], offset + start as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 4097]));
        let mut b = vec![0u8; 4097];
        b[4096] = 1;
        assert!(!is_zero(&b));
        b[4096] = 0;
        b[3] = 1;
        assert!(!is_zero(&b[1..]));
    }
}
