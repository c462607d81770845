//! Guest RAM placement and the e820 map the guest is told about.

use crate::layout::{EBDA_START, FOUR_GIB, HIMEM_START, MMIO_HOLE_START};

/// e820 entry types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// One entry of the firmware memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryMapError {
    #[error("guest memory of {0} bytes is too small: vessel needs at least 2M")]
    TooSmall(u64),
    #[error("guest memory size {0} is not a multiple of 4 KiB")]
    Unaligned(u64),
}

/// Smallest guest vessel boots: low RAM, the kernel and its boot structures need this much.
pub const MIN_MEMORY: u64 = 2 << 20;

/// Guest RAM layout: the host mappings to create, in guest-physical order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamLayout {
    /// `(guest address, size)` of each RAM range.
    pub ranges: Vec<(u64, u64)>,
}

/// The rule for a guest's RAM size, wherever one is given (command line, VM definition,
/// API, snapshot): at least [`MIN_MEMORY`], in whole 4 KiB pages.
pub fn check_size(size: u64) -> Result<(), MemoryMapError> {
    if size < MIN_MEMORY {
        return Err(MemoryMapError::TooSmall(size));
    }
    if !size.is_multiple_of(4096) {
        return Err(MemoryMapError::Unaligned(size));
    }
    Ok(())
}

impl RamLayout {
    /// Place `size` bytes of RAM: below the 32-bit MMIO hole first, the rest above 4 GiB.
    pub fn new(size: u64) -> Result<Self, MemoryMapError> {
        check_size(size)?;
        let low = size.min(MMIO_HOLE_START);
        let mut ranges = vec![(0, low)];
        if size > low {
            ranges.push((FOUR_GIB, size - low));
        }
        Ok(Self { ranges })
    }

    /// End of RAM below 4 GiB (exclusive).
    pub fn low_end(&self) -> u64 {
        self.ranges[0].1
    }

    /// Total RAM in bytes.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(|r| r.1).sum()
    }

    /// The e820 map: conventional memory below the EBDA, the EBDA reserved, then RAM from
    /// 1 MiB (the VGA/BIOS hole between is left out, as firmware does), and RAM above 4 GiB.
    pub fn e820(&self) -> Vec<MemoryMapEntry> {
        let mut map = vec![
            MemoryMapEntry {
                addr: 0,
                size: EBDA_START,
                kind: E820_RAM,
            },
            MemoryMapEntry {
                addr: EBDA_START,
                size: 0xa0000 - EBDA_START,
                kind: E820_RESERVED,
            },
            MemoryMapEntry {
                addr: HIMEM_START,
                size: self.low_end() - HIMEM_START,
                kind: E820_RAM,
            },
        ];
        if let Some(&(addr, size)) = self.ranges.get(1) {
            map.push(MemoryMapEntry {
                addr,
                size,
                kind: E820_RAM,
            });
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_low_range() {
        let l = RamLayout::new(512 << 20).unwrap();
        assert_eq!(l.ranges, vec![(0, 512 << 20)]);
        assert_eq!(
            l.e820(),
            vec![
                MemoryMapEntry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820_RAM
                },
                MemoryMapEntry {
                    addr: 0x9fc00,
                    size: 0x400,
                    kind: E820_RESERVED
                },
                MemoryMapEntry {
                    addr: 0x100000,
                    size: (512 << 20) - 0x100000,
                    kind: E820_RAM
                },
            ]
        );
    }

    #[test]
    fn large_guest_splits_around_the_mmio_hole() {
        let l = RamLayout::new(4 << 30).unwrap();
        assert_eq!(l.ranges, vec![(0, 3 << 30), (4 << 30, 1 << 30)]);
        assert_eq!(l.total(), 4 << 30);
        let e = l.e820();
        assert_eq!(
            e.last().unwrap(),
            &MemoryMapEntry {
                addr: 4 << 30,
                size: 1 << 30,
                kind: E820_RAM
            }
        );
    }

    #[test]
    fn rejects_tiny_and_unaligned_sizes() {
        assert_eq!(
            RamLayout::new(1 << 20),
            Err(MemoryMapError::TooSmall(1 << 20))
        );
        assert_eq!(
            RamLayout::new((64 << 20) + 1),
            Err(MemoryMapError::Unaligned((64 << 20) + 1))
        );
    }
}
