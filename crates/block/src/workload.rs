//! A deterministic random I/O workload: the `vessel disk stress` tool replays it and the
//! crash-safety tests recompute what each operation wrote.

/// One operation of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Write { offset: u64, len: u64 },
    Zero { offset: u64, len: u64 },
    Discard { offset: u64, len: u64 },
}

impl Op {
    /// The byte range the operation changes.
    pub fn range(&self) -> (u64, u64) {
        match *self {
            Op::Write { offset, len } | Op::Zero { offset, len } | Op::Discard { offset, len } => {
                (offset, len)
            }
        }
    }
}

/// Operations on a disk of `size` bytes, each at most `max_len` bytes long, derived from
/// `seed` and the operation's index alone.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub seed: u64,
    pub size: u64,
    pub max_len: u64,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Workload {
    /// Operation number `i`. Mostly writes (some 4 KiB-aligned, some not), some zeroing.
    pub fn op(&self, i: u64) -> Op {
        let r = splitmix(self.seed ^ splitmix(i));
        let r2 = splitmix(r);
        let mut offset = r2 % self.size;
        let mut len = (splitmix(r2) % self.max_len.max(1)) + 1;
        if r.is_multiple_of(3) {
            offset &= !4095;
            len = len.div_ceil(4096) * 4096;
        }
        let len = len.min(self.size - offset);
        match r % 16 {
            0 => Op::Zero { offset, len },
            1 => Op::Discard { offset, len },
            _ => Op::Write { offset, len },
        }
    }

    /// The bytes write number `i` writes (never all zero).
    pub fn data(&self, i: u64, len: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len as usize);
        let mut x = splitmix(self.seed.wrapping_mul(31) ^ i);
        while (out.len() as u64) < len {
            x = splitmix(x);
            out.extend_from_slice(&(x | 1).to_le_bytes());
        }
        out.truncate(len as usize);
        out
    }

    /// Apply operation `i` to an in-memory model of the disk.
    pub fn apply(&self, i: u64, model: &mut [u8]) {
        let op = self.op(i);
        let (offset, len) = op.range();
        let range = offset as usize..(offset + len) as usize;
        match op {
            Op::Write { .. } => model[range].copy_from_slice(&self.data(i, len)),
            Op::Zero { .. } | Op::Discard { .. } => model[range].fill(0),
        }
    }

    /// Run operation `i` on an image.
    pub fn run(&self, i: u64, image: &mut dyn crate::DiskImage) -> crate::Result<()> {
        match self.op(i) {
            Op::Write { offset, len } => image.write_at(&self.data(i, len), offset),
            Op::Zero { offset, len } => image.write_zeroes(offset, len),
            Op::Discard { offset, len } => image.discard(offset, len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let w = Workload {
            seed: 5,
            size: 1 << 20,
            max_len: 65536,
        };
        let mut kinds = [0; 3];
        for i in 0..2000 {
            assert_eq!(w.op(i), w.op(i));
            let (off, len) = w.op(i).range();
            assert!(len > 0 && off + len <= 1 << 20);
            kinds[match w.op(i) {
                Op::Write { .. } => 0,
                Op::Zero { .. } => 1,
                Op::Discard { .. } => 2,
            }] += 1;
        }
        assert!(kinds.iter().all(|&k| k > 0));
        assert_eq!(w.data(3, 100), w.data(3, 100));
        assert_ne!(w.data(3, 100), w.data(4, 100));
    }
}
