//! Bump allocation of BAR addresses in a 32-bit and a 64-bit MMIO window.

use crate::config::BarKind;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocatorError {
    #[error("BAR size {0:#x} is not a power of two")]
    BadSize(u64),
    #[error("no room for a {size:#x}-byte BAR in the MMIO windows")]
    Exhausted { size: u64 },
    #[error("window {base:#x}+{len:#x} wraps around")]
    BadWindow { base: u64, len: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Window {
    next: u64,
    end: u64,
}

impl Window {
    fn new(base: u64, len: u64) -> Result<Self, AllocatorError> {
        let end = base
            .checked_add(len)
            .ok_or(AllocatorError::BadWindow { base, len })?;
        Ok(Self { next: base, end })
    }

    fn take(&mut self, size: u64) -> Option<u64> {
        let start = self.next.checked_add(size - 1)? & !(size - 1);
        let end = start.checked_add(size)?;
        (end <= self.end).then(|| {
            self.next = end;
            start
        })
    }
}

/// Hands out naturally aligned BAR addresses. 64-bit BARs go to the 64-bit window first and
/// fall back to the 32-bit window; 32-bit BARs only come from the 32-bit window (which must
/// lie below 4 GiB).
#[derive(Debug, Clone)]
pub struct BarAllocator {
    mmio32: Window,
    mmio64: Window,
}

impl BarAllocator {
    pub fn new(mmio32: (u64, u64), mmio64: (u64, u64)) -> Result<Self, AllocatorError> {
        let low = Window::new(mmio32.0, mmio32.1)?;
        if low.end > 1 << 32 {
            return Err(AllocatorError::BadWindow {
                base: mmio32.0,
                len: mmio32.1,
            });
        }
        Ok(Self {
            mmio32: low,
            mmio64: Window::new(mmio64.0, mmio64.1)?,
        })
    }

    /// A base address for a memory BAR of `size` bytes and `kind` (I/O BARs are not
    /// allocated here).
    pub fn allocate(&mut self, size: u64, kind: BarKind) -> Result<u64, AllocatorError> {
        if !size.is_power_of_two() {
            return Err(AllocatorError::BadSize(size));
        }
        let found = match kind {
            BarKind::Memory64 { .. } => self.mmio64.take(size).or_else(|| self.mmio32.take(size)),
            BarKind::Memory32 { .. } => self.mmio32.take(size),
            BarKind::Io => None,
        };
        found.ok_or(AllocatorError::Exhausted { size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M64: BarKind = BarKind::Memory64 {
        prefetchable: false,
    };
    const M32: BarKind = BarKind::Memory32 {
        prefetchable: false,
    };

    #[test]
    fn aligned_bump_allocation_and_fallback() {
        let mut a = BarAllocator::new((0xc000_0000, 0x10000), (0x1_0000_0000, 0x10000)).unwrap();
        assert_eq!(a.allocate(0x1000, M32), Ok(0xc000_0000));
        assert_eq!(a.allocate(0x4000, M32), Ok(0xc000_4000));
        assert_eq!(a.allocate(0x8000, M64), Ok(0x1_0000_0000));
        assert_eq!(a.allocate(0x8000, M64), Ok(0x1_0000_8000));
        assert_eq!(a.allocate(0x8000, M64), Ok(0xc000_8000));
        assert_eq!(
            a.allocate(0x8000, M64),
            Err(AllocatorError::Exhausted { size: 0x8000 })
        );
        assert_eq!(
            a.allocate(0x3000, M32),
            Err(AllocatorError::BadSize(0x3000))
        );
        assert!(BarAllocator::new((0xffff_0000, 0x2_0000), (0, 0)).is_err());
        assert!(BarAllocator::new((0, 1), (u64::MAX, 2)).is_err());
    }
}
