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

/// A CRC-32C computed over several pieces of input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Crc32c(u32);

impl Crc32c {
    pub(crate) fn new() -> Crc32c {
        Crc32c(!0)
    }

    /// Add `bytes` to the checksummed input.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        for &b in bytes {
            c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    pub(crate) fn finish(self) -> u32 {
        !self.0
    }
}

/// CRC-32C of `bytes`, with the 4 bytes at `skip` (a checksum field) counted as zero.
pub(crate) fn crc32c_skipping(bytes: &[u8], skip: Option<usize>) -> u32 {
    let mut c = Crc32c::new();
    match skip {
        Some(s) if s < bytes.len() => {
            let end = (s + 4).min(bytes.len());
            c.update(&bytes[..s]);
            c.update(&[0; 4][..end - s]);
            c.update(&bytes[end..]);
        }
        _ => c.update(bytes),
    }
    c.finish()
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
        assert_eq!(
            crc32c_skipping(b"1234567\0\0", Some(7)),
            crc32c_skipping(b"1234567ab", Some(7))
        );
        let mut c = Crc32c::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xe306_9283);
    }
}
