//! GUID partition table: primary header at LBA 1, backup header at the last LBA. Both
//! header and entry array CRCs are checked; when the primary is unusable the backup is used.

use block::DiskImage;

use super::{le32, le64, Error, PartKind, Partition};

/// BIOS boot partition (GRUB core image, no file system).
pub(crate) const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
/// Linux swap.
pub(crate) const LINUX_SWAP: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";

const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Upper bound on the entry array (the spec minimum is 16 KiB; 4 MiB is far beyond any tool).
const MAX_ARRAY_BYTES: u64 = 4 << 20;
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// A validated GPT header.
#[derive(Debug)]
struct Header {
    entries_lba: u64,
    num_entries: u32,
    entry_size: u32,
    entries_crc: u32,
}

/// Outcome of looking for one header.
enum Probe {
    Missing,
    Invalid(String),
    Valid(Vec<Partition>),
}

/// Read the GPT with `sector` bytes per LBA. `Ok(None)` when neither header has the
/// signature; the bool is true when the backup header was used.
pub(crate) fn read(
    disk: &mut dyn DiskImage,
    sector: u64,
) -> Result<Option<(Vec<Partition>, bool)>, Error> {
    let sectors = disk.size() / sector;
    if sectors < 3 {
        return Ok(None);
    }
    let primary = match probe(disk, sector, 1)? {
        Probe::Valid(parts) => return Ok(Some((parts, false))),
        Probe::Missing => None,
        Probe::Invalid(reason) => Some(format!("primary header: {reason}")),
    };
    let backup = match probe(disk, sector, sectors - 1)? {
        Probe::Valid(parts) => return Ok(Some((parts, true))),
        Probe::Missing if primary.is_none() => return Ok(None),
        Probe::Missing => "backup header signature missing".to_string(),
        Probe::Invalid(reason) => format!("backup header: {reason}"),
    };
    Err(Error::CorruptGpt {
        primary: primary.unwrap_or_else(|| "primary header signature missing".into()),
        backup,
    })
}

/// Look for a header at `lba` and, if it validates, its partition entries.
fn probe(disk: &mut dyn DiskImage, sector: u64, lba: u64) -> Result<Probe, Error> {
    let mut buf = vec![0u8; sector as usize];
    let Some(offset) = lba.checked_mul(sector) else {
        return Ok(Probe::Missing);
    };
    super::read(disk, &mut buf, offset, "GPT header")?;
    if &buf[..8] != SIGNATURE {
        return Ok(Probe::Missing);
    }
    let header = match parse_header(&buf, lba, disk.size() / sector) {
        Ok(h) => h,
        Err(reason) => return Ok(Probe::Invalid(reason)),
    };
    let len = u64::from(header.num_entries) * u64::from(header.entry_size);
    let mut array = vec![0u8; len as usize];
    super::read(
        disk,
        &mut array,
        header.entries_lba * sector,
        "GPT partition entries",
    )?;
    if CRC32.checksum(&array) != header.entries_crc {
        return Ok(Probe::Invalid("partition entry array CRC mismatch".into()));
    }
    match parse_entries(&array, header.entry_size as usize, sector) {
        Ok(parts) => Ok(Probe::Valid(parts)),
        Err(reason) => Ok(Probe::Invalid(reason)),
    }
}

/// Validate the header in `buf` (one sector) found at `lba` of a disk of `sectors` LBAs.
fn parse_header(buf: &[u8], lba: u64, sectors: u64) -> Result<Header, String> {
    let header_size = le32(buf, 12) as usize;
    if header_size < 92 || header_size > buf.len() {
        return Err(format!("header size {header_size} is invalid"));
    }
    let stored_crc = le32(buf, 16);
    let mut copy = buf[..header_size].to_vec();
    copy[16..20].fill(0);
    if CRC32.checksum(&copy) != stored_crc {
        return Err("header CRC mismatch".into());
    }
    let my_lba = le64(buf, 24);
    if my_lba != lba {
        return Err(format!(
            "header says it is at LBA {my_lba} but was found at LBA {lba}"
        ));
    }
    let first_usable = le64(buf, 40);
    let last_usable = le64(buf, 48);
    if first_usable > last_usable.saturating_add(1) {
        return Err(format!(
            "first usable LBA {first_usable} is after last usable LBA {last_usable}"
        ));
    }
    let entries_lba = le64(buf, 72);
    let num_entries = le32(buf, 80);
    let entry_size = le32(buf, 84);
    if !(128..=4096).contains(&entry_size) || !entry_size.is_multiple_of(8) {
        return Err(format!("partition entry size {entry_size} is invalid"));
    }
    let array_bytes = u64::from(num_entries) * u64::from(entry_size);
    if array_bytes > MAX_ARRAY_BYTES {
        return Err(format!(
            "{num_entries} partition entries is implausibly many"
        ));
    }
    let sector = buf.len() as u64;
    let array_sectors = array_bytes.div_ceil(sector);
    if entries_lba < 1 || entries_lba.saturating_add(array_sectors) > sectors {
        return Err(format!(
            "partition entries at LBA {entries_lba} lie outside the disk"
        ));
    }
    Ok(Header {
        entries_lba,
        num_entries,
        entry_size,
        entries_crc: le32(buf, 88),
    })
}

/// Parse the used entries of a CRC-checked entry array.
fn parse_entries(array: &[u8], entry_size: usize, sector: u64) -> Result<Vec<Partition>, String> {
    let mut parts = Vec::new();
    for (i, e) in array.chunks_exact(entry_size).enumerate() {
        let type_guid = &e[0..16];
        if type_guid.iter().all(|&b| b == 0) {
            continue;
        }
        let index = i as u32 + 1;
        let first = le64(e, 32);
        let last = le64(e, 40);
        if first > last {
            return Err(format!("partition {index} starts after it ends"));
        }
        let (Some(start), Some(size)) = (
            first.checked_mul(sector),
            (last - first)
                .checked_add(1)
                .and_then(|n| n.checked_mul(sector)),
        ) else {
            return Err(format!(
                "partition {index} lies beyond any possible disk size"
            ));
        };
        let name: Vec<u16> = e[56..128.min(e.len())]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        parts.push(Partition {
            index,
            start,
            size,
            part_uuid: Some(guid_text(&e[16..32]).to_lowercase()),
            name: String::from_utf16_lossy(&name),
            kind: PartKind::Gpt {
                type_guid: guid_text(type_guid),
            },
        });
    }
    Ok(parts)
}

/// Canonical upper-case text of an on-disk (mixed-endian) GUID.
pub(crate) fn guid_text(g: &[u8]) -> String {
    let mut b = [0u8; 16];
    let n = g.len().min(16);
    b[..n].copy_from_slice(&g[..n]);
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(lba: u64, entries_lba: u64, num: u32, array_crc: u32) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&lba.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&1000u64.to_le_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&num.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = CRC32.checksum(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    #[test]
    fn guid_is_mixed_endian() {
        let raw = [
            0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47,
            0x7D, 0xE4,
        ];
        assert_eq!(guid_text(&raw), "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    }

    #[test]
    fn header_checks() {
        let h = header(1, 2, 128, 0);
        assert!(parse_header(&h, 1, 2048).is_ok());
        assert!(parse_header(&h, 2047, 2048).unwrap_err().contains("LBA"));
        let mut bad = h.clone();
        bad[40] ^= 1;
        assert_eq!(
            parse_header(&bad, 1, 2048).unwrap_err(),
            "header CRC mismatch"
        );
        let far = header(1, 2040, 128, 0);
        assert!(parse_header(&far, 1, 2048).unwrap_err().contains("outside"));
        let huge = header(1, 2, u32::MAX, 0);
        assert!(parse_header(&huge, 1, 1 << 40)
            .unwrap_err()
            .contains("implausibly"));
    }

    #[test]
    fn entries_reject_inverted_ranges() {
        let mut e = vec![0u8; 128];
        e[0] = 1;
        e[32..40].copy_from_slice(&100u64.to_le_bytes());
        e[40..48].copy_from_slice(&50u64.to_le_bytes());
        assert!(parse_entries(&e, 128, 512).is_err());
        e[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        e[32..40].copy_from_slice(&0u64.to_le_bytes());
        assert!(parse_entries(&e, 128, 512).is_err());
    }
}
