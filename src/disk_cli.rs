//! `vessel disk …`: create, inspect, convert, resize and check disk images.
//!
//! Exit status (crate::exit): 0 ok, 2 bad arguments or clear user errors, 3 `check` found
//! corruption, 1 other errors.

pub(crate) mod convert;
mod report;
mod tools;

use std::path::{Path, PathBuf};

use anyhow::Context;
use block::{CreateOptions, Format, OpenOptions};
use clap::Subcommand;

use crate::size::NewSize;

#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Create a new, empty (sparse) image.
    Create {
        /// The image file to create (refused when it exists).
        file: PathBuf,
        /// raw, qcow2, vdi, vhd, vmdk or vhdx.
        #[arg(long, short = 'f', value_parser = parse_format)]
        format: Format,
        /// Virtual size with its unit, e.g. 8G (B, K, M, G, T; powers of 1024). Defaults to
        /// the backing image's size.
        #[arg(long, short = 's', value_parser = parse_size)]
        size: Option<u64>,
        /// Backing image (relative paths are relative to FILE's directory).
        #[arg(long, short = 'b')]
        backing: Option<PathBuf>,
        /// Format of the backing image (detected from its content otherwise).
        #[arg(long, short = 'F', value_parser = parse_format)]
        backing_format: Option<Format>,
        /// Cluster / block / grain size, e.g. 64K.
        #[arg(long, value_parser = parse_size)]
        cluster_size: Option<u64>,
        /// Allocate all space up front (formats with a fixed variant).
        #[arg(long)]
        fixed: bool,
    },
    /// Show format, sizes and backing chain of an image.
    Info {
        /// The image to describe.
        file: PathBuf,
        /// Skip detection and use this format.
        #[arg(long, short = 'f', value_parser = parse_format)]
        format: Option<Format>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Follow backing files, parents and extents that the image names by an absolute
        /// path or with `..` (refused otherwise: see docs/disks.md).
        #[arg(long)]
        allow_external_backing: bool,
    },
    /// Copy an image (with its backing chain flattened) into a new sparse image.
    /// Options as qemu-img's: `-f` the input format, `-O` the output format.
    Convert {
        /// The image to read (with its backing chain).
        src: PathBuf,
        /// The image to write (refused when it exists).
        dst: PathBuf,
        /// Output format: raw, qcow2, vdi, vhd, vmdk or vhdx.
        #[arg(long = "output-format", short = 'O', value_parser = parse_format)]
        format: Format,
        /// Input format (detected from its content otherwise).
        #[arg(long = "format", short = 'f', alias = "source-format", value_parser = parse_format)]
        source_format: Option<Format>,
        /// Output cluster / block size.
        #[arg(long, value_parser = parse_size)]
        cluster_size: Option<u64>,
        /// Follow backing files, parents and extents that the image names by an absolute
        /// path or with `..` (refused otherwise: see docs/disks.md).
        #[arg(long)]
        allow_external_backing: bool,
    },
    /// Change the virtual size (shrinking only when no data lies beyond the new end).
    Resize {
        /// The image to resize.
        file: PathBuf,
        /// The new virtual size (e.g. 20G), or +SIZE to grow by SIZE (e.g. +10G).
        #[arg(value_parser = crate::size::parse_new_size, allow_hyphen_values = true)]
        size: NewSize,
        /// The image's format (detected from its content otherwise).
        #[arg(long, short = 'f', value_parser = parse_format)]
        format: Option<Format>,
        /// Follow backing files, parents and extents that the image names by an absolute
        /// path or with `..` (refused otherwise: see docs/disks.md).
        #[arg(long)]
        allow_external_backing: bool,
    },
    /// Check an image for corruption (exit status 3 when found).
    Check {
        /// The image to check.
        file: PathBuf,
        /// The image's format (detected from its content otherwise).
        #[arg(long, short = 'f', value_parser = parse_format)]
        format: Option<Format>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Free leaked clusters (qcow2).
        #[arg(long)]
        repair: bool,
        /// Follow backing files, parents and extents that the image names by an absolute
        /// path or with `..` (refused otherwise: see docs/disks.md).
        #[arg(long)]
        allow_external_backing: bool,
    },
    /// Random-read benchmark through the DiskImage trait (for bench/disk.sh).
    #[command(hide = true)]
    BenchRead {
        /// The image to read.
        file: PathBuf,
        /// Bytes per read.
        #[arg(long, default_value = "4096")]
        block_size: usize,
        /// Number of reads.
        #[arg(long, default_value = "20000")]
        count: u64,
    },
    /// Endless deterministic random writes with periodic flushes (crash tests).
    #[command(hide = true)]
    Stress {
        /// The image to write.
        file: PathBuf,
        /// Seed of the operation sequence.
        #[arg(long)]
        seed: u64,
        /// After each completed flush, the index of the last operation it covers is
        /// appended to this file.
        #[arg(long)]
        log: PathBuf,
        /// Operations between two flushes.
        #[arg(long, default_value = "16")]
        ops_per_flush: u64,
        /// Largest write, in bytes.
        #[arg(long, default_value = "262144")]
        max_len: u64,
        /// Stop after this many operations (runs until killed otherwise).
        #[arg(long)]
        ops: Option<u64>,
    },
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse::<Format>().map_err(|e| e.to_string())
}

/// Sizes in bytes: a number with its unit (crate::size).
pub fn parse_size(s: &str) -> Result<u64, String> {
    crate::size::parse_size(s)
}

pub fn run(cmd: DiskCommand) -> anyhow::Result<i32> {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`vessel disk info x | head`) instead of failing on EPIPE.
    // SAFETY: setting the default disposition of SIGPIPE installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    Ok(crate::exit::finish(dispatch(cmd)))
}

fn dispatch(cmd: DiskCommand) -> anyhow::Result<i32> {
    match cmd {
        DiskCommand::Create {
            file,
            format,
            size,
            backing,
            backing_format,
            cluster_size,
            fixed,
        } => create(
            &file,
            format,
            size,
            backing,
            backing_format,
            cluster_size,
            fixed,
        ),
        DiskCommand::Info {
            file,
            format,
            json,
            allow_external_backing,
        } => report::info(
            &file,
            &OpenOptions {
                read_only: true,
                format,
                allow_external_backing,
            },
            json,
        ),
        DiskCommand::Convert {
            src,
            dst,
            format,
            source_format,
            cluster_size,
            allow_external_backing,
        } => {
            let source = OpenOptions {
                read_only: true,
                format: source_format,
                allow_external_backing,
            };
            let size = convert::convert(&src, &dst, format, &source, cluster_size)?;
            println!(
                "converted {} to {} ({format}, virtual size {})",
                src.display(),
                dst.display(),
                crate::size::human(size)
            );
            Ok(0)
        }
        DiskCommand::Resize {
            file,
            size,
            format,
            allow_external_backing,
        } => resize(&file, size, format, allow_external_backing),
        DiskCommand::Check {
            file,
            format,
            json,
            repair,
            allow_external_backing,
        } => report::check(&file, format, json, repair, allow_external_backing),
        DiskCommand::BenchRead {
            file,
            block_size,
            count,
        } => tools::bench_read(&file, block_size, count),
        DiskCommand::Stress {
            file,
            seed,
            log,
            ops_per_flush,
            max_len,
            ops,
        } => tools::stress(&file, seed, &log, ops_per_flush, max_len, ops),
    }
}

/// `vessel disk create`: an image of `size` bytes, or of its backing file's size.
fn create(
    file: &Path,
    format: Format,
    size: Option<u64>,
    backing: Option<PathBuf>,
    backing_format: Option<Format>,
    cluster_size: Option<u64>,
    fixed: bool,
) -> anyhow::Result<i32> {
    let size = match (size, &backing) {
        (Some(size), _) => size,
        (None, Some(b)) => {
            let resolved = block::resolve_backing(file, b);
            let image = block::open(
                &resolved,
                &OpenOptions {
                    read_only: true,
                    format: backing_format,
                    // The user named this backing file; its own chain is only
                    // read here, for the size.
                    allow_external_backing: true,
                },
            )?;
            image.size()
        }
        (None, None) => return Err(crate::exit::usage("--size is required without --backing")),
    };
    let opts = CreateOptions {
        backing: backing.map(|b| (b, backing_format)),
        fixed,
        cluster_size,
    };
    block::create(file, format, size, &opts)
        .with_context(|| format!("creating {}", file.display()))?;
    let backing = match &opts.backing {
        Some((b, _)) => format!(", backed by {}", b.display()),
        None => String::new(),
    };
    println!(
        "created {} ({format}, virtual size {}{backing})",
        file.display(),
        crate::size::human(size)
    );
    Ok(0)
}

/// `vessel disk resize`: the image's virtual size set or changed by `size`.
fn resize(
    file: &Path,
    size: NewSize,
    format: Option<Format>,
    allow_external_backing: bool,
) -> anyhow::Result<i32> {
    let mut image = block::open(
        file,
        &OpenOptions {
            read_only: false,
            format,
            allow_external_backing,
        },
    )?;
    let old = image.size();
    let new = size.apply(old).map_err(crate::exit::usage)?;
    image.resize(new)?;
    image.flush()?;
    println!(
        "resized {} from {} to {}",
        file.display(),
        crate::size::human(old),
        crate::size::human(new)
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert!(parse_size("512").is_err(), "a size needs its unit");
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert!(parse_size("8X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
