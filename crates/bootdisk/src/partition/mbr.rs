//! DOS / MBR partition tables: four primary entries in sector 0 and a chain of extended
//! boot records for logical partitions (bounded, loop-checked).

use block::DiskImage;

use super::{le32, read, Error, PartKind, Partition};

const SECTOR: u64 = 512;
/// Most logical partitions followed in an extended partition chain.
const MAX_LOGICAL: u32 = 128;

/// One primary or logical entry, LBAs absolute.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    number: u32,
    type_byte: u8,
    first_lba: u64,
    sectors: u64,
}

/// The primary table of sector 0.
#[derive(Debug)]
pub(crate) struct Mbr {
    /// Disk signature (bytes 440..444), 0 when unset.
    signature: u32,
    /// Used primary entries.
    pub(crate) entries: Vec<Entry>,
    /// Whether an entry has type 0xEE (GPT protective / hybrid MBR).
    pub(crate) protective: bool,
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0F | 0x85)
}

/// Parse the four table slots at 446 of a boot sector; `None` without the 0x55AA signature.
fn slots(sector: &[u8; 512]) -> Option<[(u8, u8, u64, u64); 4]> {
    if sector[510] != 0x55 || sector[511] != 0xAA {
        return None;
    }
    let mut out = [(0u8, 0u8, 0u64, 0u64); 4];
    for (i, slot) in out.iter_mut().enumerate() {
        let e = &sector[446 + 16 * i..446 + 16 * (i + 1)];
        *slot = (e[0], e[4], u64::from(le32(e, 8)), u64::from(le32(e, 12)));
    }
    Some(out)
}

/// Parse sector 0. `None` when it carries no valid MBR (no signature, or status bytes that
/// show it is something else, e.g. a FAT boot sector).
pub(crate) fn parse_sector(sector: &[u8; 512]) -> Option<Mbr> {
    let slots = slots(sector)?;
    if slots
        .iter()
        .any(|&(status, t, _, _)| t != 0 && status != 0 && status != 0x80)
    {
        return None;
    }
    let mut entries = Vec::new();
    let mut protective = false;
    for (i, &(_, type_byte, first_lba, sectors)) in slots.iter().enumerate() {
        if type_byte == 0xEE {
            protective = true;
        }
        if type_byte != 0 && sectors != 0 {
            entries.push(Entry {
                number: i as u32 + 1,
                type_byte,
                first_lba,
                sectors,
            });
        }
    }
    Some(Mbr {
        signature: le32(sector, 440),
        entries,
        protective,
    })
}

/// The primaries plus the logical partitions of any extended partition.
pub(crate) fn expand(disk: &mut dyn DiskImage, mbr: &Mbr) -> Result<Vec<Partition>, Error> {
    let mut all = Vec::new();
    for e in &mbr.entries {
        if is_extended(e.type_byte) {
            logical(disk, e, &mut all)?;
        } else {
            all.push(*e);
        }
    }
    Ok(all
        .into_iter()
        .map(|e| Partition {
            index: e.number,
            start: e.first_lba * SECTOR,
            size: e.sectors * SECTOR,
            part_uuid: (mbr.signature != 0)
                .then(|| format!("{:08x}-{:02x}", mbr.signature, e.number)),
            name: String::new(),
            kind: PartKind::Mbr {
                type_byte: e.type_byte,
            },
        })
        .collect())
}

/// Follow the EBR chain of the extended partition `ext`, appending logical entries.
fn logical(disk: &mut dyn DiskImage, ext: &Entry, out: &mut Vec<Entry>) -> Result<(), Error> {
    let disk_sectors = disk.size() / SECTOR;
    let mut next = 0u64;
    let mut seen = Vec::new();
    for number in 5..5 + MAX_LOGICAL {
        let ebr_lba = ext.first_lba + next;
        if seen.contains(&ebr_lba) {
            return Err(Error::CorruptMbr(format!(
                "extended partition chain loops back to LBA {ebr_lba}"
            )));
        }
        if ebr_lba >= disk_sectors {
            return Err(Error::CorruptMbr(format!(
                "extended boot record at LBA {ebr_lba} lies past the end of the disk"
            )));
        }
        seen.push(ebr_lba);
        let mut sector = [0u8; 512];
        read(disk, &mut sector, ebr_lba * SECTOR, "extended boot record")?;
        let Some(slots) = slots(&sector) else {
            return Err(Error::CorruptMbr(format!(
                "extended boot record at LBA {ebr_lba} has no 0x55AA signature"
            )));
        };
        let (_, t, first, sectors) = slots[0];
        if t != 0 && sectors != 0 {
            out.push(Entry {
                number,
                type_byte: t,
                first_lba: ebr_lba + first,
                sectors,
            });
        }
        let (_, link_type, link_first, _) = slots[1];
        if !is_extended(link_type) || link_first == 0 {
            return Ok(());
        }
        next = link_first;
    }
    Err(Error::CorruptMbr(format!(
        "more than {MAX_LOGICAL} logical partitions"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sector_with(entries: &[(u8, u8, u32, u32)]) -> [u8; 512] {
        let mut s = [0u8; 512];
        for (i, &(status, t, first, n)) in entries.iter().enumerate() {
            let e = &mut s[446 + 16 * i..446 + 16 * (i + 1)];
            e[0] = status;
            e[4] = t;
            e[8..12].copy_from_slice(&first.to_le_bytes());
            e[12..16].copy_from_slice(&n.to_le_bytes());
        }
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    #[test]
    fn primary_entries() {
        let mut s = sector_with(&[(0x80, 0x83, 2048, 4096), (0, 0xEE, 1, 100)]);
        s[440..444].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        let m = parse_sector(&s).unwrap();
        assert!(m.protective);
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.signature, 0x1234_abcd);
    }

    #[test]
    fn not_an_mbr() {
        assert!(parse_sector(&[0u8; 512]).is_none());
        let s = sector_with(&[(0x13, 0x83, 2048, 4096)]);
        assert!(parse_sector(&s).is_none());
    }
}
