//! Partition tables: GPT (primary header, backup header as fallback) and MBR (primary and
//! logical partitions). Everything read from the disk is validated; a disk without any
//! table is treated as one whole-disk "partition" (index 0) that may hold a file system.

mod gpt;
mod mbr;

use block::DiskImage;

/// Errors while reading a partition table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: block::Error,
    },
    #[error("disk image is only {size} bytes: too small to hold a partition table or file system")]
    TooSmall { size: u64 },
    #[error("corrupt GPT: {primary} and no valid backup ({backup})")]
    CorruptGpt { primary: String, backup: String },
    #[error("corrupt MBR: {0}")]
    CorruptMbr(String),
}

/// Which kind of partition table the disk carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// GUID partition table (`backup` when the primary header was unusable).
    Gpt { backup: bool },
    /// DOS / MBR partition table.
    Mbr,
    /// No partition table: the whole disk is one file system (or nothing).
    Unpartitioned,
}

/// What the partition table says the partition is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartKind {
    /// GPT partition type GUID, upper-case canonical text.
    Gpt { type_guid: String },
    /// MBR partition type byte.
    Mbr { type_byte: u8 },
    /// The whole unpartitioned disk.
    WholeDisk,
}

/// One partition, in bytes of the virtual disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Linux-style number: 1.. for GPT entries and MBR primaries, 5.. for logical
    /// partitions, 0 for a whole unpartitioned disk.
    pub index: u32,
    /// Byte offset of the first byte.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// PARTUUID as Linux spells it (GPT unique GUID in lower case, or `SSSSSSSS-NN` for
    /// MBR disks with a disk signature).
    pub part_uuid: Option<String>,
    /// GPT partition name (empty for MBR).
    pub name: String,
    pub kind: PartKind,
}

impl Partition {
    /// Partitions that cannot hold a Linux file system worth probing.
    pub fn is_ignorable(&self) -> bool {
        match &self.kind {
            PartKind::Gpt { type_guid } => {
                type_guid == gpt::BIOS_BOOT || type_guid == gpt::LINUX_SWAP
            }
            PartKind::Mbr { type_byte } => *type_byte == 0x82,
            PartKind::WholeDisk => false,
        }
    }

    /// First byte after the partition (saturating; tables are validated separately).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }
}

/// Read the partition table of `disk`.
pub fn read_table(disk: &mut dyn DiskImage) -> Result<(Scheme, Vec<Partition>), Error> {
    let size = disk.size();
    if size < 1024 {
        return Err(Error::TooSmall { size });
    }
    let mut sector0 = [0u8; 512];
    read(disk, &mut sector0, 0, "master boot record")?;
    let mbr = mbr::parse_sector(&sector0);
    let protective = mbr.as_ref().is_some_and(|m| m.protective);
    for sector_size in [512u64, 4096] {
        if let Some((parts, backup)) = gpt::read(disk, sector_size)? {
            return Ok((Scheme::Gpt { backup }, parts));
        }
    }
    if protective {
        return Err(Error::CorruptGpt {
            primary: "the MBR is a GPT protective MBR but no GPT header was found".into(),
            backup: "no backup header at the end of the disk".into(),
        });
    }
    match mbr {
        Some(m) if !m.entries.is_empty() => Ok((Scheme::Mbr, mbr::expand(disk, &m)?)),
        _ => Ok((
            Scheme::Unpartitioned,
            vec![Partition {
                index: 0,
                start: 0,
                size,
                part_uuid: None,
                name: String::new(),
                kind: PartKind::WholeDisk,
            }],
        )),
    }
}

/// `read_at` with the error naming what was being read.
pub(crate) fn read(
    disk: &mut dyn DiskImage,
    buf: &mut [u8],
    offset: u64,
    what: &'static str,
) -> Result<(), Error> {
    disk.read_at(buf, offset)
        .map_err(|source| Error::Io { what, source })
}

/// Little-endian u32 at `at`; zero when out of bounds.
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

/// Little-endian u64 at `at`; zero when out of bounds.
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}
