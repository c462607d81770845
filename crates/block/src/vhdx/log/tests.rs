//! Log scans of crafted logs: the active sequence is found and the work stays linear.

use super::*;

const GUID: Guid = [7; 16];
const MIB: usize = 1 << 20;

fn unlimited() -> Work {
    Work {
        checks: u64::MAX,
        hashed: u64::MAX,
    }
}

/// Scan `log` without a limit: the replay and the work it took.
fn scan_all(log: &[u8]) -> (Option<Replay>, Work) {
    let mut work = Work::default();
    let replay = scan(log, &GUID, unlimited(), &mut work).unwrap();
    (replay, work)
}

fn put(log: &mut [u8], pos: usize, entry: &[u8]) {
    log[pos..pos + entry.len()].copy_from_slice(entry);
}

#[test]
fn long_chain_of_small_entries_is_walked_once() {
    // 4096 one-sector entries, each following the previous one, all naming the first as
    // the tail: walking the chain from every entry with `Vec::contains` took ~10^10
    // steps here.
    let mut log = vec![0u8; 16 * MIB];
    for i in 0..log.len() / LOG_SECTOR {
        let e = encode_entry(100 + i as u64, &GUID, 0, &[], &[], (0, 0));
        put(&mut log, i * LOG_SECTOR, &e);
    }
    let (replay, work) = scan_all(&log);
    assert_eq!(replay.unwrap().entries, 4096);
    assert_eq!(work.hashed, log.len() as u64);
    assert_eq!(work.checks, 4096);
}

#[test]
fn headers_in_every_sector_cost_no_checksum() {
    // Every sector claims to start an entry spanning the whole log: checksumming each
    // claim before checking it cost 4096 * 16 MiB of CRC here.
    let mut log = vec![0u8; 16 * MIB];
    for i in 0..log.len() / LOG_SECTOR {
        let mut e = encode_entry(1, &GUID, 0, &[(0, [0; LOG_SECTOR])], &[], (0, 0));
        e[8..12].copy_from_slice(&(log.len() as u32).to_le_bytes());
        put(&mut log, i * LOG_SECTOR, &e[..LOG_SECTOR]);
    }
    let (replay, work) = scan_all(&log);
    assert!(replay.is_none());
    assert_eq!(work.hashed, 0);
    assert!(work.checks <= 3 * 4096, "{work:?}");
}

#[test]
fn bad_checksums_are_computed_once_per_byte() {
    // Entries that pass every structural check but fail their checksum, back to back,
    // with many descriptors each.
    let mut log = vec![0u8; 4 * MIB];
    let writes: Vec<(u64, [u8; LOG_SECTOR])> = (0..120)
        .map(|i| (i * 4096, [i as u8; LOG_SECTOR]))
        .collect();
    let mut pos = 0;
    let mut n = 0;
    loop {
        let mut e = encode_entry(n, &GUID, 0, &writes, &[], (0, 0));
        if pos + e.len() > log.len() {
            break;
        }
        e[4] ^= 1;
        put(&mut log, pos, &e);
        pos += e.len();
        n += 1;
    }
    let (replay, work) = scan_all(&log);
    assert!(replay.is_none());
    assert_eq!(work.hashed, n * 121 * LOG_SECTOR as u64);
    assert!(work.hashed <= log.len() as u64);
    assert!(work.checks <= 4 * (log.len() / LOG_SECTOR) as u64);
}

#[test]
fn work_over_the_limit_is_an_error() {
    let mut log = vec![0u8; MIB];
    for i in 0..log.len() / LOG_SECTOR {
        let e = encode_entry(i as u64, &GUID, 0, &[], &[], (0, 0));
        put(&mut log, i * LOG_SECTOR, &e);
    }
    let limit = Work {
        checks: 10,
        hashed: u64::MAX,
    };
    let mut work = Work::default();
    assert!(scan(&log, &GUID, limit, &mut work).is_err());
    assert!(work.checks > 10 && work.checks < 20, "{work:?}");
    let limit = Work {
        checks: u64::MAX,
        hashed: 10 * LOG_SECTOR as u64,
    };
    assert!(scan(&log, &GUID, limit, &mut Work::default()).is_err());
}

#[test]
fn sequence_wrapping_the_log_end_is_found() {
    // Newest entries at the start of the log continue the chain that ends the log; an
    // older, unrelated chain in the middle has lower sequence numbers.
    let mut log = vec![0u8; MIB];
    let last = log.len() - LOG_SECTOR;
    let tail = (last - LOG_SECTOR) as u32;
    put(
        &mut log,
        last - LOG_SECTOR,
        &encode_entry(50, &GUID, tail, &[], &[], (0, 1)),
    );
    put(
        &mut log,
        last,
        &encode_entry(51, &GUID, tail, &[], &[], (0, 2)),
    );
    let page = [0xab; LOG_SECTOR];
    let e = encode_entry(52, &GUID, tail, &[(8192, page)], &[], (0, 3));
    put(&mut log, 0, &e);
    put(
        &mut log,
        64 * LOG_SECTOR,
        &encode_entry(7, &GUID, 64 * 4096, &[], &[], (0, 9)),
    );
    let replay = scan_all(&log).0.unwrap();
    assert_eq!(replay.entries, 3);
    assert_eq!(replay.last_file_offset, 3);
    assert_eq!(replay.writes.len(), 1);
    assert_eq!(replay.writes[0].offset, 8192);
    assert_eq!(replay.writes[0].data.as_deref(), Some(&page[..]));
}
