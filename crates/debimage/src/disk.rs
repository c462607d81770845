//! The disk image: a sparse raw file with a GPT (sgdisk) whose one partition holds an ext4
//! file system that `mkfs.ext4 -d` fills from the tree, written in place with `-E offset=`
//! (no loop devices, no mounts, no copy).

use std::io::Read;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::tools::{self, MKFS_EXT4, SGDISK};

const MIB: u64 = 1 << 20;
/// Sector size of the image.
pub const SECTOR: u64 = 512;
/// The partition starts at 1 MiB, as partitioning tools align it.
pub const PARTITION_OFFSET: u64 = MIB;
/// Smallest disk accepted: the tree alone is about 500 MiB.
pub const MIN_SIZE: u64 = 768 * MIB;
/// GPT type of the root partition: "Linux filesystem" (sgdisk's 8300).
pub const LINUX_FS_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// Where the root partition lies in the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Size of the disk image in bytes (a whole number of MiB).
    pub disk_size: u64,
    /// First sector of the partition.
    pub first_lba: u64,
    /// Last sector of the partition (inclusive).
    pub last_lba: u64,
}

impl Layout {
    /// The layout of a disk of `size` bytes rounded up to MiB: 1 MiB before the partition
    /// (GPT and alignment) and 1 MiB after it (the backup GPT's 33 sectors, aligned).
    pub fn new(size: u64) -> Result<Layout> {
        let disk_size = size
            .checked_next_multiple_of(MIB)
            .ok_or_else(|| Error::InvalidOption(format!("disk size {size} is too large")))?;
        if disk_size < MIN_SIZE {
            return Err(Error::InvalidOption(format!(
                "disk size {size} bytes is below the minimum of {} MiB",
                MIN_SIZE / MIB
            )));
        }
        Ok(Layout {
            disk_size,
            first_lba: PARTITION_OFFSET / SECTOR,
            last_lba: (disk_size - MIB) / SECTOR - 1,
        })
    }

    /// Byte offset of the partition.
    pub fn partition_offset(&self) -> u64 {
        self.first_lba * SECTOR
    }

    /// Size of the partition in bytes.
    pub fn partition_size(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * SECTOR
    }
}

/// Create `path` as a sparse file of the layout's size (replacing any file there).
pub fn create_sparse(path: &Path, layout: &Layout) -> Result<()> {
    let file = std::fs::File::create(path).at(path)?;
    file.set_len(layout.disk_size).at(path)
}

/// Make the ext4 file system labelled `root` with UUID `fs_uuid` from the tree at `root`,
/// inside `disk` at the partition's offset. `fake_time` pins its timestamps.
pub fn mkfs(
    disk: &Path,
    layout: &Layout,
    root: &Path,
    fs_uuid: &str,
    fake_time: Option<u64>,
) -> Result<()> {
    let mut cmd = MKFS_EXT4.command()?;
    cmd.args(mkfs_arguments(layout, fs_uuid))
        .arg("-d")
        .arg(root)
        .arg(disk)
        .arg(format!("{}k", layout.partition_size() / 1024));
    if let Some(epoch) = fake_time {
        cmd.env("E2FSPROGS_FAKE_TIME", epoch.to_string());
    }
    tools::run(MKFS_EXT4, &mut cmd).map(drop)
}

/// mkfs.ext4's options before the `-d`, device and size arguments.
pub fn mkfs_arguments(layout: &Layout, fs_uuid: &str) -> Vec<String> {
    [
        "-q",
        "-F",
        "-t",
        "ext4",
        "-L",
        "root",
        "-U",
        fs_uuid,
        "-E",
        &format!(
            "offset={},nodiscard,hash_seed={fs_uuid}",
            layout.partition_offset()
        ),
    ]
    .map(str::to_string)
    .to_vec()
}

/// Write a GPT to `disk`: disk GUID `disk_guid`, partition 1 named `root` of type
/// [`LINUX_FS_TYPE`] with unique GUID `partition_uuid`, spanning the layout's sectors.
pub fn partition(
    disk: &Path,
    layout: &Layout,
    disk_guid: &str,
    partition_uuid: &str,
) -> Result<()> {
    let mut cmd = SGDISK.command()?;
    cmd.args(sgdisk_arguments(layout, disk_guid, partition_uuid))
        .arg(disk);
    tools::run(SGDISK, &mut cmd).map(drop)
}

/// sgdisk's arguments before the disk path.
pub fn sgdisk_arguments(layout: &Layout, disk_guid: &str, partition_uuid: &str) -> Vec<String> {
    vec![
        "--clear".into(),
        format!("--disk-guid={disk_guid}"),
        format!("--new=1:{}:{}", layout.first_lba, layout.last_lba),
        format!("--typecode=1:{LINUX_FS_TYPE}"),
        "--change-name=1:root".into(),
        format!("--partition-guid=1:{partition_uuid}"),
    ]
}

/// Lower-case hex SHA-256 of the file at `path`.
pub fn sha256(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).at(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 * MIB as usize];
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `sgdisk --print` of `disk`, for checks and diagnostics.
pub fn print_table(disk: &Path) -> Result<String> {
    let mut cmd: Command = SGDISK.command()?;
    cmd.arg("--print").arg(disk);
    let out = tools::run(SGDISK, &mut cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests;
