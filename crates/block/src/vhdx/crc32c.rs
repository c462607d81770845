//! CRC-32C (Castagnoli), the checksum of VHDX headers, region tables and log entries.

const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = table();

/// CRC-32C of `bytes`, with the 4 bytes at `skip` (a checksum field) counted as zero.
pub(crate) fn crc32c_skipping(bytes: &[u8], skip: Option<usize>) -> u32 {
    let mut c = !0u32;
    for (i, &b) in bytes.iter().enumerate() {
        let b = match skip {
            Some(s) if (s..s + 4).contains(&i) => 0,
            _ => b,
        };
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        assert_eq!(crc32c_skipping(b"123456789", None), 0xe306_9283);
        assert_eq!(
            crc32c_skipping(b"12\x00\x00\x00\x006789", Some(2)),
            crc32c_skipping(b"12abcd6789", Some(2))
        );
    }
}
