//! Port-I/O and MMIO buses: address ranges mapped to devices.
//!
//! A vCPU exit for an I/O port or an MMIO address is dispatched to the device whose range
//! holds the address; the device sees the offset into its range. Accesses that hit no
//! device read as all-ones and are otherwise ignored, as on real hardware.
//!
//! Ranges can be added and removed while vCPUs run (a guest reprogramming a PCI BAR moves
//! its device): the map is behind a read-write lock that is released before the device is
//! called, so a device may itself change the bus it sits on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// A device on a bus. `offset` is relative to the start of the range it was inserted at.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty or wraps")]
    InvalidRange { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} overlaps a device already at {other:#x}")]
    Overlap { base: u64, len: u64, other: u64 },
    #[error("no device is mapped at {0:#x}")]
    NotMapped(u64),
}

type SharedDevice = Arc<Mutex<dyn BusDevice>>;

struct Entry {
    len: u64,
    device: SharedDevice,
}

/// An address space of devices (one for port I/O, one for MMIO).
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Entry>>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Map `device` at `[base, base + len)`.
    pub fn insert(&self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        let mut ranges = self.ranges.write().unwrap_or_else(|p| p.into_inner());
        if let Some((&other, entry)) = ranges.range(..end).next_back() {
            if other + entry.len > base {
                return Err(BusError::Overlap { base, len, other });
            }
        }
        ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// Unmap the device whose range starts at `base`; returns it and the range length.
    pub fn remove(&self, base: u64) -> Result<(SharedDevice, u64), BusError> {
        let mut ranges = self.ranges.write().unwrap_or_else(|p| p.into_inner());
        let entry = ranges.remove(&base).ok_or(BusError::NotMapped(base))?;
        Ok((entry.device, entry.len))
    }

    /// The device holding `addr` and the offset of `addr` inside its range.
    fn resolve(&self, addr: u64) -> Option<(SharedDevice, u64)> {
        let ranges = self.ranges.read().unwrap_or_else(|p| p.into_inner());
        let (&base, entry) = ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset < entry.len).then(|| (entry.device.clone(), offset))
    }

    /// Read from `addr`; returns false (and fills all-ones) when no device is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((device, offset)) => {
                lock(&device).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Write to `addr`; returns false when no device is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((device, offset)) => {
                lock(&device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Lock a device, recovering it if another thread panicked while holding it: a device's
/// state is plain registers, so continuing is better than taking the VMM down.
fn lock(device: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u64, u8)>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data[0]));
        }
    }

    #[test]
    fn dispatches_by_range_and_offset() {
        let bus = Bus::new();
        let dev = Arc::new(Mutex::new(Echo(vec![])));
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b, [2]);
        assert!(!bus.read(0x400, &mut b));
        assert_eq!(b, [0xff]);
        assert!(bus.write(0x3f8, &[7]));
        assert!(!bus.write(0x3f7, &[7]));
        assert_eq!(dev.lock().unwrap().0, vec![(0, 7)]);
    }

    #[test]
    fn rejects_overlap_and_empty_ranges() {
        let bus = Bus::new();
        let dev = Arc::new(Mutex::new(Echo(vec![])));
        bus.insert(dev.clone(), 0x10, 0x10).unwrap();
        assert!(matches!(
            bus.insert(dev.clone(), 0x1f, 1),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev.clone(), 0x8, 0x9),
            Err(BusError::Overlap { .. })
        ));
        assert!(bus.insert(dev.clone(), 0x20, 1).is_ok());
        assert!(bus.insert(dev.clone(), 0x8, 0x8).is_ok());
        assert!(matches!(
            bus.insert(dev.clone(), 0x100, 0),
            Err(BusError::InvalidRange { .. })
        ));
        assert!(matches!(
            bus.insert(dev, u64::MAX, 2),
            Err(BusError::InvalidRange { .. })
        ));
    }

    #[test]
    fn ranges_can_be_moved_while_shared() {
        let bus = Arc::new(Bus::new());
        let dev = Arc::new(Mutex::new(Echo(vec![])));
        bus.insert(dev, 0x1000, 0x100).unwrap();
        let (dev, len) = bus.remove(0x1000).unwrap();
        assert!(!bus.write(0x1000, &[1]));
        bus.insert(dev, 0x2000, len).unwrap();
        assert!(bus.write(0x2010, &[1]));
        assert_eq!(
            bus.remove(0x3000).err().map(|e| e.to_string()),
            Some("no device is mapped at 0x3000".into())
        );
    }
}
