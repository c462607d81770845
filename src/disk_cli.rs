//! `vessel disk …`: create, inspect, convert, resize and check disk images.
//!
//! Exit status: 0 ok, 2 bad arguments or clear user errors, 3 `check` found corruption,
//! 1 other errors.

pub(crate) mod convert;
mod report;
mod tools;

use std::path::PathBuf;

use anyhow::Context;
use block::{CreateOptions, Format, OpenOptions};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Create a new, empty (sparse) image.
    Create {
        file: PathBuf,
        /// raw, qcow2, vdi, vhd, vmdk or vhdx.
        #[arg(long, short = 'f', value_parser = parse_format)]
        format: Format,
        /// Virtual size, e.g. 8G (K, M, G, T suffixes; powers of 1024). Defaults to the
        /// backing image's size.
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
        file: PathBuf,
        /// Skip detection and use this format.
        #[arg(long, short = 'f', value_parser = parse_format)]
        format: Option<Format>,
        #[arg(long)]
        json: bool,
        /// Follow backing files, parents and extents that the image names by an absolute
        /// path or with `..` (refused otherwise: see docs/disks.md).
        #[arg(long)]
        allow_external_backing: bool,
    },
    /// Copy an image (with its backing chain flattened) into a new sparse image.
    Convert {
        src: PathBuf,
        dst: PathBuf,
        /// Output format.
        #[arg(long, short = 'f', short_alias = 'O', value_parser = parse_format)]
        format: Format,
        /// Source format (detected from its content otherwise).
        #[arg(long, value_parser = parse_format)]
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
        file: PathBuf,
        #[arg(value_parser = parse_size)]
        size: u64,
        #[arg(long, short = 'f', value_parser = parse_format)]
        format: Option<Format>,
        /// Follow backing files, parents and extents that the image names by an absolute
        /// path or with `..` (refused otherwise: see docs/disks.md).
        #[arg(long)]
        allow_external_backing: bool,
    },
    /// Check an image for corruption (exit status 3 when found).
    Check {
        file: PathBuf,
        #[arg(long, short = 'f', value_parser = parse_format)]
        format: Option<Format>,
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
        file: PathBuf,
        #[arg(long, default_value = "4096")]
        block_size: usize,
        #[arg(long, default_value = "20000")]
        count: u64,
    },
    /// Endless deterministic random writes with periodic flushes (crash tests).
    #[command(hide = true)]
    Stress {
        file: PathBuf,
        #[arg(long)]
        seed: u64,
        /// After each completed flush, the index of the last operation it covers is
        /// appended to this file.
        #[arg(long)]
        log: PathBuf,
        #[arg(long, default_value = "16")]
        ops_per_flush: u64,
        #[arg(long, default_value = "262144")]
        max_len: u64,
        /// Stop after this many operations (runs until killed otherwise).
        #[arg(long)]
        ops: Option<u64>,
    },
}

/// A user mistake (exit status 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse::<Format>().map_err(|e| e.to_string())
}

/// Sizes in bytes: a number with an optional K, M, G, T or P suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    crate::size::parse_size(s, 1)
}

/// Exit status for an error: 2 for user mistakes, 1 otherwise.
fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return 2;
        }
        if let Some(e) = cause.downcast_ref::<block::Error>() {
            return match e {
                block::Error::InvalidArgument(_)
                | block::Error::OutOfRange { .. }
                | block::Error::Unsupported { .. }
                | block::Error::ExternalReference { .. }
                | block::Error::Symlink { .. }
                | block::Error::NotAnImage { .. }
                | block::Error::ReadOnly => 2,
                block::Error::Io { source, .. } => match source.kind() {
                    std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::AlreadyExists
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::IsADirectory => 2,
                    _ => 1,
                },
                _ => 1,
            };
        }
    }
    1
}

/// The error and its causes, skipping causes already spelled out by the message before.
fn message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

pub fn run(cmd: DiskCommand) -> anyhow::Result<i32> {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`vessel disk info x | head`) instead of failing on EPIPE.
    // SAFETY: setting the default disposition of SIGPIPE installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match dispatch(cmd) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("vessel: error: {}", message(&e));
            Ok(exit_code(&e))
        }
    }
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
        } => {
            let size = match (size, &backing) {
                (Some(size), _) => size,
                (None, Some(b)) => {
                    let resolved = block::resolve_backing(&file, b);
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
                (None, None) => {
                    return Err(UsageError("--size is required without --backing".into()).into())
                }
            };
            let opts = CreateOptions {
                backing: backing.map(|b| (b, backing_format)),
                fixed,
                cluster_size,
            };
            block::create(&file, format, size, &opts)
                .with_context(|| format!("creating {}", file.display()))?;
            Ok(0)
        }
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
            convert::convert(&src, &dst, format, &source, cluster_size)
        }
        DiskCommand::Resize {
            file,
            size,
            format,
            allow_external_backing,
        } => {
            let mut image = block::open(
                &file,
                &OpenOptions {
                    read_only: false,
                    format,
                    allow_external_backing,
                },
            )?;
            image.resize(size)?;
            image.flush()?;
            Ok(0)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert!(parse_size("8X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
