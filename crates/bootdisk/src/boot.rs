//! The search: read the partition table, probe every partition, open the ext2/3/4 ones and
//! ask [`crate::locate`]'s strategies (grub.cfg, then `/vmlinuz` symlinks) for a kernel.
//! When nothing is found the error says why in the user's terms.

use std::cell::RefCell;
use std::rc::Rc;

use block::DiskImage;

use crate::ext4fs::{self, ExtFs};
use crate::locate::{self, Found};
use crate::memdisk::vacant;
use crate::partition::{self, Partition};
use crate::probe::{self, FsKind};
use crate::reader::{PartView, ReadError, SharedDisk};

/// Size caps for files read from the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub kernel: u64,
    pub initrd: u64,
    pub grub_cfg: u64,
}

/// Default caps: kernel 256 MiB, initrd (all parts together) 1 GiB, grub.cfg 1 MiB.
pub const LIMITS: Limits = Limits {
    kernel: 256 << 20,
    initrd: 1 << 30,
    grub_cfg: 1 << 20,
};

/// Why no boot files could be found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Partition(#[from] partition::Error),
    #[error(
        "partition {index} ends at byte {end} but the disk image is only {disk_size} bytes: \
         the image looks truncated"
    )]
    Truncated {
        index: u32,
        end: u64,
        disk_size: u64,
    },
    #[error("cannot read partition {index}: {source}")]
    Read {
        index: u32,
        #[source]
        source: ReadError,
    },
    #[error("partition {index}: {source}")]
    File {
        index: u32,
        #[source]
        source: ext4fs::Error,
    },
    #[error(
        "root file system on partition {index} is {kind}; vessel reads only ext2/3/4 to boot \
         an image directly"
    )]
    Unsupported { index: u32, kind: FsKind },
    #[error("no ext2/3/4 file system on the disk ({summary})")]
    NoFilesystem { summary: String },
    #[error("no kernel found: {reason}")]
    NoKernel { reason: String },
}

/// A partition as reported to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Linux partition number (0: whole unpartitioned disk).
    pub index: u32,
    /// Byte offset on the virtual disk.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// File system UUID (ext2/3/4 only).
    pub fs_uuid: Option<String>,
    /// Partition UUID (GPT unique GUID or MBR `signature-NN`).
    pub part_uuid: Option<String>,
    /// File system label (ext2/3/4 only; may be empty).
    pub label: Option<String>,
}

/// How the kernel was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSource {
    /// The default entry of a grub.cfg (`config`: its path in its file system).
    GrubEntry { title: String, config: String },
    /// The `/vmlinuz` and `/initrd.img` symlinks Debian and Ubuntu maintain.
    Symlinks,
}

/// What the image boots.
#[derive(Debug, Clone)]
pub struct BootFiles {
    pub kernel: Vec<u8>,
    /// Initrd (several initrd files concatenated, as GRUB does).
    pub initrd: Option<Vec<u8>>,
    pub cmdline: String,
    pub source: BootSource,
    /// Kernel path inside the file system it was read from.
    pub kernel_path: String,
    /// The partition holding the root file system (named by `root=` when it can be
    /// matched, else the partition the kernel came from).
    pub root_partition: PartitionInfo,
    /// The partition the kernel was read from (a separate /boot, or the root).
    pub boot_partition: PartitionInfo,
}

/// One probed partition.
pub(crate) struct Volume {
    pub(crate) part: Partition,
    pub(crate) kind: FsKind,
    pub(crate) fs: Option<ExtFs>,
}

impl Volume {
    pub(crate) fn info(&self) -> PartitionInfo {
        PartitionInfo {
            index: self.part.index,
            start: self.part.start,
            size: self.part.size,
            fs_uuid: self.fs.as_ref().map(|f| f.uuid.clone()),
            part_uuid: self.part.part_uuid.clone(),
            label: self.fs.as_ref().map(|f| f.label.clone()),
        }
    }
}

/// Find the kernel, initrd and command line `disk` boots, with the default [`LIMITS`].
///
/// The disk is borrowed for the duration of the call (a placeholder briefly takes its
/// place in the box) and is always handed back.
pub fn find_boot(disk: &mut Box<dyn DiskImage>) -> Result<BootFiles, Error> {
    find_boot_with(disk, &LIMITS)
}

/// [`find_boot`] with explicit size caps.
pub fn find_boot_with(disk: &mut Box<dyn DiskImage>, limits: &Limits) -> Result<BootFiles, Error> {
    let shared: SharedDisk = Rc::new(RefCell::new(Some(std::mem::replace(disk, vacant()))));
    let result = search(&shared, limits);
    if let Some(d) = shared.borrow_mut().take() {
        *disk = d;
    }
    result
}

fn search(shared: &SharedDisk, limits: &Limits) -> Result<BootFiles, Error> {
    let (parts, disk_size) = {
        let mut guard = shared.borrow_mut();
        let Some(d) = guard.as_mut() else {
            return Err(Error::NoFilesystem {
                summary: "the disk is not available".into(),
            });
        };
        (partition::read_table(d.as_mut())?.1, d.size())
    };
    let mut volumes = Vec::new();
    let mut notes = Vec::new();
    for part in parts {
        if part.end() > disk_size || part.start > part.end() {
            return Err(Error::Truncated {
                index: part.index,
                end: part.end(),
                disk_size,
            });
        }
        if part.is_ignorable() {
            continue;
        }
        let view = PartView::new(shared.clone(), part.start, part.size);
        let kind = probe::probe(&view, part.size).map_err(|source| Error::Read {
            index: part.index,
            source,
        })?;
        let fs = match kind {
            FsKind::Ext => match ExtFs::open(view) {
                Ok(fs) => Some(fs),
                Err(e) => {
                    notes.push(format!("partition {}: {e}", part.index));
                    None
                }
            },
            _ => None,
        };
        volumes.push(Volume { part, kind, fs });
    }
    let found = locate::find(&volumes, limits, &mut notes)?;
    match found {
        Some(found) => Ok(finish(&volumes, found)),
        None => Err(nothing_found(&volumes, notes)),
    }
}

fn finish(volumes: &[Volume], f: Found) -> BootFiles {
    let boot = volumes[f.boot_volume].info();
    let root = locate::root_volume(volumes, &f.cmdline)
        .map(|i| volumes[i].info())
        .unwrap_or_else(|| boot.clone());
    BootFiles {
        kernel: f.kernel,
        initrd: f.initrd,
        cmdline: f.cmdline,
        source: f.source,
        kernel_path: f.kernel_path,
        root_partition: root,
        boot_partition: boot,
    }
}

/// The most useful explanation when no kernel was found.
fn nothing_found(volumes: &[Volume], notes: Vec<String>) -> Error {
    if let Some(v) = volumes.iter().find(|v| v.kind.could_be_root()) {
        return Error::Unsupported {
            index: v.part.index,
            kind: v.kind,
        };
    }
    if volumes.iter().all(|v| v.kind != FsKind::Ext) {
        let summary = if volumes.is_empty() {
            "no partitions".to_string()
        } else {
            volumes
                .iter()
                .map(|v| format!("partition {} is {}", v.part.index, v.kind))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Error::NoFilesystem { summary };
    }
    Error::NoKernel {
        reason: notes.join("; "),
    }
}
