//! Reading files from an ext2/3/4 partition with `ext4-view`, with size caps so that a
//! hostile image cannot make vessel allocate gigabytes, and symlinks resolved only inside
//! the file system (ext4-view bounds symlink chains and path lengths).

use ext4_view::{Ext4, Ext4Error};

use crate::reader::PartView;

/// Errors of one ext4 file system or one file in it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the ext2/3/4 file system: {0}")]
    Load(#[source] Ext4Error),
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: Ext4Error,
    },
    #[error("{path} is {size} bytes, more than the {limit}-byte limit for a {what}")]
    TooLarge {
        path: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },
}

/// An opened ext2/3/4 file system.
pub(crate) struct ExtFs {
    fs: Ext4,
    /// File system UUID, lower-case canonical text.
    pub(crate) uuid: String,
    /// Volume label (may be empty).
    pub(crate) label: String,
}

impl ExtFs {
    /// Load the file system in `view` (superblock, group descriptors, journal).
    pub(crate) fn open(view: PartView) -> Result<ExtFs, Error> {
        let fs = Ext4::load(Box::new(view)).map_err(Error::Load)?;
        let uuid = uuid_text(fs.uuid().as_bytes());
        let label = fs.label().to_str().unwrap_or_default().to_string();
        Ok(ExtFs { fs, uuid, label })
    }

    /// Whether `path` exists (following symlinks inside the file system).
    pub(crate) fn exists(&self, path: &str) -> bool {
        self.fs.exists(path).unwrap_or(false)
    }

    /// Whether `path` is a directory.
    pub(crate) fn is_dir(&self, path: &str) -> bool {
        self.fs.metadata(path).is_ok_and(|m| m.is_dir())
    }

    /// `path` with every symlink resolved inside the file system.
    pub(crate) fn canonical(&self, path: &str) -> Option<String> {
        let p = self.fs.canonicalize(path).ok()?;
        p.to_str().ok().map(str::to_string)
    }

    /// Target of the symlink `path`, if it is one.
    pub(crate) fn link_target(&self, path: &str) -> Option<String> {
        let target = self.fs.read_link(path).ok()?;
        target.to_str().ok().map(str::to_string)
    }

    /// Read the regular file `path` if it is at most `limit` bytes.
    pub(crate) fn read_capped(
        &self,
        path: &str,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, Error> {
        let read_err = |source| Error::Read {
            path: path.to_string(),
            source,
        };
        let size = self.fs.metadata(path).map_err(read_err)?.len();
        if size > limit {
            return Err(Error::TooLarge {
                path: path.to_string(),
                what,
                size,
                limit,
            });
        }
        self.fs.read(path).map_err(read_err)
    }
}

/// Canonical lower-case text of a UUID stored in byte order.
pub(crate) fn uuid_text(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_format() {
        let b = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        assert_eq!(uuid_text(&b), "12345678-9abc-def0-0123-456789abcdef");
    }
}
