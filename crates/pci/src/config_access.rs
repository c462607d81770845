//! The two ways a guest reaches configuration space: the legacy 0xCF8 address / 0xCFC data
//! ports and the memory-mapped ECAM window. Both are bus devices forwarding to [`PciRoot`].

use std::sync::{Arc, Mutex, MutexGuard};

use devices::bus::BusDevice;

use crate::root::PciRoot;

/// Base and length of the PIO range [`PciConfigIo`] is inserted at (0xcf8..0xd00).
pub const PCI_CONFIG_IO_BASE: u64 = 0xcf8;
pub const PCI_CONFIG_IO_LEN: u64 = 8;
const ENABLE_BIT: u32 = 1 << 31;

fn lock(root: &Mutex<PciRoot>) -> MutexGuard<'_, PciRoot> {
    root.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Split a data access at byte `offset` of a config dword into (dword-aligned offset,
/// byte shift) when it stays inside the dword; `None` for straddling or odd-sized accesses.
fn sub_dword(offset: u64, len: usize) -> Option<(usize, usize)> {
    let shift = (offset & 3) as usize;
    (matches!(len, 1 | 2 | 4) && shift + len <= 4).then_some(((offset & !3) as usize, shift))
}

/// Port I/O configuration mechanism #1 (0xCF8 address, 0xCFC..0xCFF data).
pub struct PciConfigIo {
    root: Arc<Mutex<PciRoot>>,
    address: u32,
}

impl PciConfigIo {
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        Self { root, address: 0 }
    }

    /// (bus, device, function, register offset) selected by the address latch.
    fn target(&self) -> Option<(u8, u8, u8, usize)> {
        let a = self.address;
        (a & ENABLE_BIT != 0).then_some((
            (a >> 16) as u8,
            ((a >> 11) & 0x1f) as u8,
            ((a >> 8) & 0x7) as u8,
            (a & 0xfc) as usize,
        ))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        match offset {
            0..=3 => {
                if let Some((_, shift)) = sub_dword(offset, data.len()) {
                    let bytes = self.address.to_le_bytes();
                    data.copy_from_slice(&bytes[shift..shift + data.len()]);
                }
            }
            4..=7 => {
                let (Some((bus, dev, func, reg)), Some((_, shift))) =
                    (self.target(), sub_dword(offset, data.len()))
                else {
                    return;
                };
                let value = lock(&self.root)
                    .config_read(bus, dev, func, reg)
                    .to_le_bytes();
                data.copy_from_slice(&value[shift..shift + data.len()]);
            }
            _ => {}
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0..=3
                // Only full dword writes latch an address (byte writes to 0xCF9 etc. are
                // other chipset registers on real hardware).
                if offset == 0 && data.len() == 4 => {
                    self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                }
            4..=7 => {
                let (Some((bus, dev, func, reg)), Some((_, shift))) =
                    (self.target(), sub_dword(offset, data.len()))
                else {
                    return;
                };
                lock(&self.root).config_write(bus, dev, func, reg + shift, data);
            }
            _ => {}
        }
    }
}

/// The ECAM (MMCONFIG) window: 4 KiB of configuration space per function, 1 MiB per bus.
/// Insert it on the MMIO bus at the base the VMM advertises in the ACPI MCFG table, with
/// length [`crate::ECAM_BUS_SIZE`] × buses (bus 0 only is populated).
pub struct PciConfigMmio {
    root: Arc<Mutex<PciRoot>>,
}

impl PciConfigMmio {
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        Self { root }
    }

    fn decode(offset: u64) -> (u8, u8, u8, u64) {
        (
            (offset >> 20) as u8,
            ((offset >> 15) & 0x1f) as u8,
            ((offset >> 12) & 0x7) as u8,
            offset & 0xfff,
        )
    }
}

impl BusDevice for PciConfigMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let (bus, dev, func, reg) = Self::decode(offset);
        let Some((aligned, shift)) = sub_dword(reg, data.len()) else {
            return;
        };
        let value = lock(&self.root)
            .config_read(bus, dev, func, aligned)
            .to_le_bytes();
        data.copy_from_slice(&value[shift..shift + data.len()]);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (bus, dev, func, reg) = Self::decode(offset);
        if sub_dword(reg, data.len()).is_some() {
            lock(&self.root).config_write(bus, dev, func, reg as usize, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Arc<Mutex<PciRoot>> {
        Arc::new(Mutex::new(PciRoot::new(None)))
    }

    #[test]
    fn cf8_cfc_reads_host_bridge() {
        let mut io = PciConfigIo::new(root());
        io.write(0, &0x8000_0000u32.to_le_bytes());
        let mut d = [0u8; 4];
        io.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x8000_0000);
        io.read(4, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x0d57_8086);
        let mut w = [0u8; 2];
        io.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x0d57);
        // Class code via address register 0x08, byte 3 read at 0xCFF.
        io.write(0, &0x8000_0008u32.to_le_bytes());
        let mut b = [0u8; 1];
        io.read(7, &mut b);
        assert_eq!(b[0], 0x06);
        // Disabled address: all-ones.
        io.write(0, &0x0000_0000u32.to_le_bytes());
        io.read(4, &mut d);
        assert_eq!(d, [0xff; 4]);
        // Absent slot.
        io.write(0, &(0x8000_0000u32 | 5 << 11).to_le_bytes());
        io.read(4, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    #[test]
    fn ecam_reads_and_writes() {
        let r = root();
        let mut mm = PciConfigMmio::new(r);
        let mut d = [0u8; 4];
        mm.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x0d57_8086);
        // Interrupt line register is writable storage.
        mm.write(0x3c, &[0x0b]);
        let mut b = [0u8; 1];
        mm.read(0x3c, &mut b);
        assert_eq!(b[0], 0x0b);
        // Extended space reads zero, absent devices all-ones, straddling accesses all-ones.
        mm.read(0x100, &mut d);
        assert_eq!(d, [0; 4]);
        mm.read(2 << 15, &mut d);
        assert_eq!(d, [0xff; 4]);
        mm.read(3, &mut [0u8; 2]);
        let mut s = [0u8; 2];
        mm.read(3, &mut s);
        assert_eq!(s, [0xff; 2]);
    }
}
