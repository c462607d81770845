use std::path::PathBuf;

/// Errors of the block layer. Messages name the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt {format} image: {reason}")]
    Corrupt {
        path: PathBuf,
        format: crate::Format,
        reason: String,
    },
    #[error("{path}: unsupported {format} feature: {feature}")]
    Unsupported {
        path: PathBuf,
        format: crate::Format,
        feature: String,
    },
    #[error("request at offset {offset} length {len} is beyond the disk size {size}")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("the image is read-only")]
    ReadOnly,
    #[error("{path}: is a {kind}, not an image (a regular file or a block device)")]
    NotAnImage { path: PathBuf, kind: &'static str },
    #[error("{path}: is a symbolic link; name the file it points to instead (symbolic links are not followed for disk images)")]
    Symlink { path: PathBuf },
    #[error("{image}: {what} '{name}' {problem}; refused unless external backing files are allowed (allow-external-backing)")]
    ExternalReference {
        image: PathBuf,
        what: &'static str,
        name: PathBuf,
        problem: &'static str,
    },
    #[error("{path}: write refused: it would make this disk, whose format was detected as raw, look like a {format} image (give the disk's format explicitly to allow it)")]
    FormatChange {
        path: PathBuf,
        format: crate::Format,
    },
    #[error(
        "{path}: its {what} ({bytes} bytes) would take the metadata held in memory for this \
         backing chain past {limit} bytes ({used} bytes already held for the images above it)"
    )]
    MetadataBudget {
        path: PathBuf,
        what: String,
        bytes: u64,
        used: u64,
        limit: u64,
    },
    #[error("{0}")]
    InvalidArgument(String),
}

pub type Result<T> = std::result::Result<T, Error>;
