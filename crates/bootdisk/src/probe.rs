//! Recognise what a partition holds from its superblock magic, so that unsupported root
//! file systems (XFS, btrfs, LUKS, LVM) are named instead of reported as "not ext4".

use crate::reader::{PartView, ReadError};

/// What a partition holds, as far as its magic numbers tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// ext2, ext3 or ext4 (magic 0xEF53 at 1080).
    Ext,
    /// XFS ("XFSB" at 0).
    Xfs,
    /// btrfs ("_BHRfS_M" at 64 KiB + 0x40).
    Btrfs,
    /// LUKS encrypted volume ("LUKS\xba\xbe" at 0).
    Luks,
    /// LVM2 physical volume ("LABELONE" in one of the first four sectors).
    Lvm,
    /// FAT (typically the EFI system partition).
    Fat,
    /// Linux swap.
    Swap,
    /// squashfs.
    Squashfs,
    /// Nothing recognised.
    Unknown,
}

impl FsKind {
    /// Whether vessel can read files from it.
    pub fn is_supported(self) -> bool {
        self == FsKind::Ext
    }

    /// Whether an unsupported kind is plausibly a Linux root or /boot file system
    /// (worth naming when no kernel was found).
    pub fn could_be_root(self) -> bool {
        matches!(
            self,
            FsKind::Xfs | FsKind::Btrfs | FsKind::Luks | FsKind::Lvm
        )
    }
}

impl std::fmt::Display for FsKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FsKind::Ext => "ext2/3/4",
            FsKind::Xfs => "XFS",
            FsKind::Btrfs => "btrfs",
            FsKind::Luks => "LUKS-encrypted",
            FsKind::Lvm => "an LVM physical volume",
            FsKind::Fat => "FAT",
            FsKind::Swap => "swap space",
            FsKind::Squashfs => "squashfs",
            FsKind::Unknown => "unrecognised",
        })
    }
}

/// Read `len` bytes at `offset` of a partition of `size` bytes; `None` if they lie outside.
fn bytes(
    view: &PartView,
    size: u64,
    offset: u64,
    len: usize,
) -> Result<Option<Vec<u8>>, ReadError> {
    if offset.saturating_add(len as u64) > size {
        return Ok(None);
    }
    let mut buf = vec![0u8; len];
    view.read_at(offset, &mut buf)?;
    Ok(Some(buf))
}

/// Identify the content of a partition of `size` bytes.
pub(crate) fn probe(view: &PartView, size: u64) -> Result<FsKind, ReadError> {
    let Some(head) = bytes(view, size, 0, 4096)? else {
        return Ok(FsKind::Unknown);
    };
    if head.starts_with(b"XFSB") {
        return Ok(FsKind::Xfs);
    }
    if head.starts_with(b"LUKS\xba\xbe") {
        return Ok(FsKind::Luks);
    }
    if head.starts_with(b"hsqs") {
        return Ok(FsKind::Squashfs);
    }
    if head[1080..1082] == [0x53, 0xEF] {
        return Ok(FsKind::Ext);
    }
    if (0..4).any(|s| &head[s * 512..s * 512 + 8] == b"LABELONE") {
        return Ok(FsKind::Lvm);
    }
    if &head[4086..4096] == b"SWAPSPACE2" || &head[4086..4096] == b"SWAP-SPACE" {
        return Ok(FsKind::Swap);
    }
    if head[510..512] == [0x55, 0xAA] && (&head[82..87] == b"FAT32" || &head[54..59] == b"FAT1") {
        return Ok(FsKind::Fat);
    }
    if let Some(b) = bytes(view, size, 0x10040, 8)? {
        if b == b"_BHRfS_M" {
            return Ok(FsKind::Btrfs);
        }
    }
    Ok(FsKind::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memdisk::MemDisk;
    use std::{cell::RefCell, rc::Rc};

    fn kind(data: Vec<u8>) -> FsKind {
        let len = data.len() as u64;
        let disk = Rc::new(RefCell::new(Some(
            Box::new(MemDisk::new(data)) as Box<dyn block::DiskImage>
        )));
        probe(&PartView::new(disk, 0, len), len).unwrap()
    }

    #[test]
    fn magics() {
        let mut d = vec![0u8; 128 << 10];
        assert_eq!(kind(d.clone()), FsKind::Unknown);
        d[..4].copy_from_slice(b"XFSB");
        assert_eq!(kind(d.clone()), FsKind::Xfs);
        d[..6].copy_from_slice(b"LUKS\xba\xbe");
        assert_eq!(kind(d.clone()), FsKind::Luks);
        d[..6].fill(0);
        d[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
        assert_eq!(kind(d.clone()), FsKind::Btrfs);
        d[1080] = 0x53;
        d[1081] = 0xEF;
        assert_eq!(kind(d), FsKind::Ext);
        assert_eq!(kind(vec![0u8; 100]), FsKind::Unknown);
    }
}
