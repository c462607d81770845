//! The seed disk: a FAT volume labelled `CIDATA` holding `meta-data`, `user-data` and
//! `network-config`, made in memory with the `fatfs` crate (no mkfs at run time) and
//! written to its file atomically.
//!
//! cloud-init's NoCloud datasource finds it with `blkid` (`TYPE=vfat`, `LABEL=CIDATA` or
//! `cidata`), mounts it and reads the files by name; the lower-case names are stored as
//! VFAT long file names. Every timestamp is the FAT epoch and the volume id is fixed, so
//! the same files always give the same bytes.

use crate::SeedFiles;
use std::fs;
use std::io::{self, Cursor, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The volume label (blkid reports it as `LABEL=CIDATA`).
pub const VOLUME_LABEL: &[u8; 11] = b"CIDATA     ";

/// The largest total size of the three files, in bytes.
pub const MAX_FILES_BYTES: usize = 32 << 20;

const MIB: usize = 1 << 20;

/// Every file's timestamps: 1980-01-01 00:00, the FAT epoch (fatfs's own fallback, when
/// built without chrono, is the invalid all-zero date).
#[derive(Debug)]
struct Epoch;

impl fatfs::TimeProvider for Epoch {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static EPOCH: Epoch = Epoch;

/// Why the seed image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The files are larger than [`MAX_FILES_BYTES`] together.
    #[error("seed files are {0} bytes together; at most {MAX_FILES_BYTES} fit a seed disk")]
    TooLarge(usize),
    /// `fatfs` failed to lay out the volume (a bug if it happens: the size has headroom).
    #[error("cannot build the FAT volume: {0}")]
    Fat(io::Error),
    /// Writing the image file failed.
    #[error("cannot write seed image {path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The volume size for files totalling `total` bytes: the files plus an eighth, plus
/// 1 MiB for the boot sector, FATs, root directory and cluster slack, in whole MiB.
pub fn image_size(total: usize) -> usize {
    (total + total / 8 + MIB).div_ceil(MIB) * MIB
}

/// The seed volume's bytes.
pub fn build_image(files: &SeedFiles) -> Result<Vec<u8>, ImageError> {
    let entries = [
        ("meta-data", &files.meta_data),
        ("user-data", &files.user_data),
        ("network-config", &files.network_config),
    ];
    let total: usize = entries.iter().map(|(_, body)| body.len()).sum();
    if total > MAX_FILES_BYTES {
        return Err(ImageError::TooLarge(total));
    }
    let mut disk = Cursor::new(vec![0u8; image_size(total)]);
    let options = fatfs::FormatVolumeOptions::new()
        .volume_label(*VOLUME_LABEL)
        .volume_id(0x5eed_c1da);
    fatfs::format_volume(&mut disk, options).map_err(ImageError::Fat)?;
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new().time_provider(&EPOCH))
            .map_err(ImageError::Fat)?;
        for (name, body) in entries {
            let mut file = fs.root_dir().create_file(name).map_err(ImageError::Fat)?;
            file.write_all(body.as_bytes()).map_err(ImageError::Fat)?;
            file.flush().map_err(ImageError::Fat)?;
        }
        fs.unmount().map_err(ImageError::Fat)?;
    }
    Ok(disk.into_inner())
}

/// Writes the seed image for `files` to `path`, replacing any file there atomically: the
/// bytes go to a temporary file in the same directory (mode 0600, as user-data may hold
/// secrets), are synced, and the temporary file is renamed over `path`. A VM holding the
/// old file open keeps reading the old image.
pub fn write_seed_image(files: &SeedFiles, path: &Path) -> Result<(), ImageError> {
    let image = build_image(files)?;
    let io_err = |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| io_err(io::Error::other("path has no file name")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&image)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn files(user_data: String) -> SeedFiles {
        SeedFiles {
            meta_data: "instance-id: \"i\"\n".into(),
            user_data,
            network_config: "version: 2\nethernets: {}\n".into(),
        }
    }

    /// Reads a file back from the image with fatfs.
    fn read_back(image: &mut [u8], name: &str) -> String {
        let fs = fatfs::FileSystem::new(Cursor::new(image), fatfs::FsOptions::new());
        let Ok(fs) = fs else {
            return String::from("<no fs>");
        };
        let mut text = String::new();
        if let Ok(mut f) = fs.root_dir().open_file(name) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    #[test]
    fn sizes() {
        assert_eq!(image_size(0), MIB);
        assert_eq!(image_size(1000), 2 * MIB);
        assert_eq!(image_size(16 * MIB), 19 * MIB);
    }

    #[test]
    fn files_read_back_and_label() {
        let f = files("#cloud-config\n{}\n".into());
        let mut image = build_image(&f).unwrap_or_default();
        assert_eq!(read_back(&mut image, "user-data"), f.user_data);
        assert_eq!(read_back(&mut image, "meta-data"), f.meta_data);
        assert_eq!(read_back(&mut image, "network-config"), f.network_config);
        let fs = fatfs::FileSystem::new(Cursor::new(&mut image), fatfs::FsOptions::new());
        assert_eq!(fs.map(|fs| fs.volume_label()).unwrap_or_default(), "CIDATA");
    }

    #[test]
    fn deterministic() {
        let f = files("x".into());
        assert_eq!(build_image(&f).ok(), build_image(&f).ok());
    }

    #[test]
    fn large_and_too_large() {
        let big = "a".repeat(22 * MIB);
        let mut image = build_image(&files(big.clone())).unwrap_or_default();
        assert_eq!(read_back(&mut image, "user-data").len(), big.len());
        assert!(matches!(
            build_image(&files("a".repeat(MAX_FILES_BYTES + 1))),
            Err(ImageError::TooLarge(_))
        ));
    }
}
