//! The error type of image builds: every variant names the tool, file or setting at fault.

use std::path::PathBuf;

/// Why an image build failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program the build runs is not installed.
    #[error("{tool} is not installed (apt-get install {package})")]
    ToolMissing {
        /// The program that was looked for.
        tool: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// A program ran and exited unsuccessfully.
    #[error("{tool} failed ({status}):\n{stderr_tail}")]
    ToolFailed {
        /// The program that failed.
        tool: String,
        /// Its exit status, as text.
        status: String,
        /// The last lines of what it printed on standard error.
        stderr_tail: String,
    },
    /// No Debian mirror could be found in the apt sources and none was given.
    #[error("no Debian mirror found in {searched} (give one with --mirror)")]
    NoMirror {
        /// The files that were read.
        searched: String,
    },
    /// The image name is not one this crate knows how to build.
    #[error("unknown image {0:?}: known images are {known}", known = crate::suite::known_names())]
    UnknownImage(String),
    /// The build needs root (mmdebstrap's root mode and `mkfs.ext4 -d` keeping file owners).
    #[error("building a Debian image needs root (mmdebstrap --mode=root keeps file owners for mkfs.ext4 -d)")]
    NotRoot,
    /// An option is out of range or inconsistent.
    #[error("{0}")]
    InvalidOption(String),
    /// The built tree lacks something a bootable image needs.
    #[error("the built root file system is not bootable: {0}")]
    Incomplete(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Attach a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
