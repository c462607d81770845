//! A reusable, 4 KiB-aligned staging buffer between guest memory and the disk image, so
//! images opened with O_DIRECT get aligned buffers whatever the guest's buffers are.

const ALIGN: usize = 4096;
/// Largest piece moved per disk call.
pub const CHUNK: usize = 1 << 20;

pub struct BounceBuffer {
    raw: Vec<u8>,
}

impl BounceBuffer {
    pub fn new() -> Self {
        Self { raw: Vec::new() }
    }

    /// An aligned buffer of `len` (≤ [`CHUNK`]) bytes.
    pub fn get(&mut self, len: usize) -> &mut [u8] {
        let len = len.min(CHUNK);
        if self.raw.len() < len + ALIGN {
            self.raw = vec![0; len.next_power_of_two().max(ALIGN) + ALIGN];
        }
        let start = self.raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        &mut self.raw[start..start + len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_bounded() {
        let mut b = BounceBuffer::new();
        for len in [1, 512, 4096, 5000, CHUNK, CHUNK + 1] {
            let s = b.get(len);
            assert_eq!(s.as_ptr() as usize % ALIGN, 0);
            assert_eq!(s.len(), len.min(CHUNK));
        }
    }
}
