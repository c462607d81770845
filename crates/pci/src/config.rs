//! A type-0 PCI configuration space: header registers with write masks, BARs that answer
//! size probing, a capability list, and the bookkeeping that turns BAR reprogramming into
//! [`BarMove`]s.

use crate::{CAP_ID_MSIX, COMMAND_IO_SPACE, COMMAND_MEMORY_SPACE};

/// Number of BAR registers in a type-0 header.
pub const NUM_BARS: usize = 6;
/// Size of the conventional configuration space (the ECAM extension reads as zero).
pub const CONFIG_SPACE_SIZE: usize = 256;

const REG_COMMAND: usize = 0x04;
const REG_STATUS: usize = 0x06;
const REG_BAR0: usize = 0x10;
const REG_CAP_PTR: usize = 0x34;
const REG_INTERRUPT_LINE: usize = 0x3c;
const REG_INTERRUPT_PIN: usize = 0x3d;
const STATUS_CAP_LIST: u16 = 1 << 4;
const FIRST_CAP_OFFSET: usize = 0x40;
/// Writable command bits: I/O, memory, bus master, parity, SERR, INTx disable.
const COMMAND_WRITABLE: u16 = 0x0547;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("BAR {0} does not exist or is already used")]
    BarUnavailable(usize),
    #[error("BAR size {0:#x} is not a power of two of at least 16 bytes (4 for I/O)")]
    BadBarSize(u64),
    #[error("BAR address {addr:#x} is not aligned to its size {size:#x} or does not fit its kind")]
    BadBarAddress { addr: u64, size: u64 },
    #[error("capability of {0} bytes does not fit in configuration space")]
    NoCapabilitySpace(usize),
}

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Memory32 { prefetchable: bool },
    Memory64 { prefetchable: bool },
}

impl BarKind {
    fn low_bits(self) -> u32 {
        match self {
            BarKind::Io => 0x1,
            BarKind::Memory32 { prefetchable } => u32::from(prefetchable) << 3,
            BarKind::Memory64 { prefetchable } => 0x4 | (u32::from(prefetchable) << 3),
        }
    }
    fn flag_mask(self) -> u32 {
        match self {
            BarKind::Io => 0x3,
            _ => 0xf,
        }
    }
    fn command_bit(self) -> u16 {
        match self {
            BarKind::Io => COMMAND_IO_SPACE,
            _ => COMMAND_MEMORY_SPACE,
        }
    }
}

/// The guest moved a BAR: the VMM must move the device's range on the bus from `old` to
/// `new` (both the base address of the whole BAR of `len` bytes) and re-register any
/// ioeventfds inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarMove {
    /// Device slot on bus 0 (filled in by the root; 0 when reported by a bare config).
    pub slot: u8,
    pub bar: u8,
    pub kind: BarKind,
    pub old: u64,
    pub new: u64,
    pub len: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bar {
    kind: BarKind,
    size: u64,
    /// The address the VMM has the BAR mapped at.
    mapped: u64,
}

/// A function's configuration space and where its BARs are mapped, for VM snapshots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PciConfigState {
    pub regs: Vec<u8>,
    pub bars_mapped: Vec<Option<u64>>,
}

/// Identification registers of a type-0 header.
#[derive(Debug, Clone, Copy, Default)]
pub struct PciHeader {
    pub vendor_id: u16,
    pub device_id: u16,
    pub revision: u8,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub subsystem_vendor_id: u16,
    pub subsystem_id: u16,
    /// Whether the function uses INTx pin A.
    pub interrupt_pin_a: bool,
}

/// A device function's configuration space.
pub struct PciConfiguration {
    regs: [u8; CONFIG_SPACE_SIZE],
    writable: [u8; CONFIG_SPACE_SIZE],
    bars: [Option<Bar>; NUM_BARS],
    /// BAR index used as the high half of a 64-bit BAR.
    bar_is_high_half: [bool; NUM_BARS],
    last_cap: Option<usize>,
    next_cap: usize,
    msix_cap: Option<usize>,
}

impl PciConfiguration {
    pub fn new(header: &PciHeader) -> Self {
        let mut config = Self {
            regs: [0; CONFIG_SPACE_SIZE],
            writable: [0; CONFIG_SPACE_SIZE],
            bars: [None; NUM_BARS],
            bar_is_high_half: [false; NUM_BARS],
            last_cap: None,
            next_cap: FIRST_CAP_OFFSET,
            msix_cap: None,
        };
        config.set_u16(0x00, header.vendor_id);
        config.set_u16(0x02, header.device_id);
        config.regs[0x08] = header.revision;
        config.regs[0x09] = header.prog_if;
        config.regs[0x0a] = header.subclass;
        config.regs[0x0b] = header.class;
        config.set_u16(0x2c, header.subsystem_vendor_id);
        config.set_u16(0x2e, header.subsystem_id);
        config.set_writable(REG_COMMAND, &COMMAND_WRITABLE.to_le_bytes());
        // Cache line size, latency timer, interrupt line: plain storage for the guest.
        config.set_writable(0x0c, &[0xff, 0xff]);
        config.set_writable(REG_INTERRUPT_LINE, &[0xff]);
        config.regs[REG_INTERRUPT_PIN] = u8::from(header.interrupt_pin_a);
        config
    }

    fn set_u16(&mut self, offset: usize, value: u16) {
        self.regs[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
    }
    fn set_u32(&mut self, offset: usize, value: u32) {
        self.regs[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }
    fn set_writable(&mut self, offset: usize, mask: &[u8]) {
        self.writable[offset..offset + mask.len()].copy_from_slice(mask);
    }
    fn u16_at(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.regs[offset], self.regs[offset + 1]])
    }
    fn u32_at(&self, offset: usize) -> u32 {
        let b = &self.regs[offset..offset + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Declare BAR `index` of `size` bytes, mapped at `addr`. A 64-bit memory BAR also takes
    /// register `index + 1`.
    pub fn add_bar(
        &mut self,
        index: usize,
        kind: BarKind,
        size: u64,
        addr: u64,
    ) -> Result<(), ConfigError> {
        let needs = if matches!(kind, BarKind::Memory64 { .. }) {
            2
        } else {
            1
        };
        if index + needs > NUM_BARS
            || (index..index + needs).any(|i| self.bars[i].is_some() || self.bar_is_high_half[i])
        {
            return Err(ConfigError::BarUnavailable(index));
        }
        let min = if kind == BarKind::Io { 4 } else { 16 };
        if !size.is_power_of_two() || size < min || (needs == 1 && size > 1 << 31) {
            return Err(ConfigError::BadBarSize(size));
        }
        if addr & (size - 1) != 0 || (needs == 1 && addr > u64::from(u32::MAX)) {
            return Err(ConfigError::BadBarAddress { addr, size });
        }
        let mask = !(size - 1);
        let off = REG_BAR0 + 4 * index;
        self.set_u32(off, (addr as u32 & mask as u32) | kind.low_bits());
        self.set_writable(off, &((mask as u32) & !kind.flag_mask()).to_le_bytes());
        if needs == 2 {
            self.set_u32(off + 4, (addr >> 32) as u32);
            self.set_writable(off + 4, &((mask >> 32) as u32).to_le_bytes());
            self.bar_is_high_half[index + 1] = true;
        }
        self.bars[index] = Some(Bar {
            kind,
            size,
            mapped: addr,
        });
        Ok(())
    }

    /// The address BAR `index` is currently programmed with, if the BAR exists.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let bar = self.bars.get(index)?.as_ref()?;
        Some(self.programmed(index, bar))
    }

    /// Size of BAR `index`, if it exists.
    pub fn bar_size(&self, index: usize) -> Option<u64> {
        Some(self.bars.get(index)?.as_ref()?.size)
    }

    fn programmed(&self, index: usize, bar: &Bar) -> u64 {
        let off = REG_BAR0 + 4 * index;
        let low = u64::from(self.u32_at(off) & !bar.kind.flag_mask());
        match bar.kind {
            BarKind::Memory64 { .. } => low | (u64::from(self.u32_at(off + 4)) << 32),
            _ => low,
        }
    }

    /// Whether the programmed value is the guest's size probe (all address bits set in
    /// either dword) rather than an address.
    fn is_probe(&self, index: usize, bar: &Bar) -> bool {
        let off = REG_BAR0 + 4 * index;
        let mask = !(bar.size - 1);
        let low_probe =
            self.u32_at(off) & !bar.kind.flag_mask() == (mask as u32) & !bar.kind.flag_mask();
        let high_probe = matches!(bar.kind, BarKind::Memory64 { .. })
            && self.u32_at(off + 4) == (mask >> 32) as u32
            && mask >> 32 != 0;
        low_probe || high_probe
    }

    /// Append a capability with ID `id`, `body` following the ID/next bytes, and a write
    /// mask of the same length as `body`. Returns the capability's offset.
    pub fn add_capability(
        &mut self,
        id: u8,
        body: &[u8],
        writable: &[u8],
    ) -> Result<usize, ConfigError> {
        let len = 2 + body.len();
        let offset = self.next_cap;
        if writable.len() != body.len() || offset + len > CONFIG_SPACE_SIZE {
            return Err(ConfigError::NoCapabilitySpace(len));
        }
        self.regs[offset] = id;
        self.regs[offset + 1] = 0;
        self.regs[offset + 2..offset + len].copy_from_slice(body);
        self.set_writable(offset + 2, writable);
        match self.last_cap {
            Some(prev) => self.regs[prev + 1] = offset as u8,
            None => {
                self.regs[REG_CAP_PTR] = offset as u8;
                let status = self.u16_at(REG_STATUS) | STATUS_CAP_LIST;
                self.set_u16(REG_STATUS, status);
            }
        }
        if id == CAP_ID_MSIX {
            self.msix_cap = Some(offset);
        }
        self.last_cap = Some(offset);
        self.next_cap = (offset + len + 3) & !3;
        Ok(offset)
    }

    /// Offset of the MSI-X capability, if one was added.
    pub fn msix_capability(&self) -> Option<usize> {
        self.msix_cap
    }

    /// Read `data.len()` bytes at `offset`; bytes past the conventional space read as 0.
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i)
                .and_then(|o| self.regs.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Read the dword holding `offset` (rounded down to 4).
    pub fn read_dword(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        self.read(offset & !3, &mut b);
        u32::from_le_bytes(b)
    }

    /// Read a raw byte range without masking (e.g. a capability's fields).
    pub fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        self.regs.get(offset..offset.checked_add(len)?)
    }

    /// Overwrite bytes the device itself owns (read-only to the guest), e.g. a capability
    /// field computed on access.
    pub fn set_bytes(&mut self, offset: usize, data: &[u8]) -> bool {
        match offset
            .checked_add(data.len())
            .and_then(|end| self.regs.get_mut(offset..end))
        {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    /// Preset the interrupt line register with the GSI the VMM routes INTx pin A to, as
    /// firmware would (the guest may still overwrite it; it is informational).
    pub fn set_interrupt_line(&mut self, line: u8) {
        self.regs[REG_INTERRUPT_LINE] = line;
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.u16_at(REG_COMMAND)
    }

    /// A guest write: only bits in the write mask change.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, &byte) in data.iter().enumerate() {
            let Some(o) = offset.checked_add(i).filter(|&o| o < CONFIG_SPACE_SIZE) else {
                return;
            };
            let mask = self.writable[o];
            self.regs[o] = (self.regs[o] & !mask) | (byte & mask);
        }
    }

    /// BARs whose programmed address differs from where they are mapped, now that their
    /// decoding is enabled and the value is not a size probe. Each returned move is taken
    /// as done (the BAR counts as mapped at `new` afterwards). Moves to address 0 (an
    /// unassigned BAR) are not reported.
    pub fn take_bar_moves(&mut self) -> Vec<BarMove> {
        let command = self.command();
        let mut moves = Vec::new();
        for index in 0..NUM_BARS {
            let Some(bar) = self.bars[index] else {
                continue;
            };
            if command & bar.kind.command_bit() == 0 || self.is_probe(index, &bar) {
                continue;
            }
            let new = self.programmed(index, &bar);
            if new != bar.mapped && new != 0 {
                moves.push(BarMove {
                    slot: 0,
                    bar: index as u8,
                    kind: bar.kind,
                    old: bar.mapped,
                    new,
                    len: bar.size,
                });
                if let Some(b) = self.bars[index].as_mut() {
                    b.mapped = new;
                }
            }
        }
        moves
    }

    pub fn state(&self) -> PciConfigState {
        PciConfigState {
            regs: self.regs.to_vec(),
            bars_mapped: self.bars.iter().map(|b| b.map(|b| b.mapped)).collect(),
        }
    }

    /// Takes `state` (from a snapshot of the same kind of function); false, leaving the
    /// configuration unchanged, when its size or BARs do not match this function's.
    pub fn restore(&mut self, state: &PciConfigState) -> bool {
        if state.regs.len() != CONFIG_SPACE_SIZE || state.bars_mapped.len() != NUM_BARS {
            return false;
        }
        let same_bars = self
            .bars
            .iter()
            .zip(&state.bars_mapped)
            .all(|(bar, mapped)| bar.is_some() == mapped.is_some());
        if !same_bars {
            return false;
        }
        self.regs.copy_from_slice(&state.regs);
        for (bar, mapped) in self.bars.iter_mut().zip(&state.bars_mapped) {
            if let (Some(bar), Some(mapped)) = (bar.as_mut(), mapped) {
                bar.mapped = *mapped;
            }
        }
        true
    }

    /// The address BAR `index` is mapped at on the VMM's bus.
    pub fn bar_mapped_address(&self, index: usize) -> Option<u64> {
        Some(self.bars.get(index)?.as_ref()?.mapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> PciHeader {
        PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1042,
            class: 1,
            subclass: 0x80,
            ..Default::default()
        }
    }

    #[test]
    fn state_round_trips_and_a_different_layout_is_refused() {
        let m64 = BarKind::Memory64 {
            prefetchable: false,
        };
        let mut c = PciConfiguration::new(&header());
        c.add_bar(0, m64, 0x1000, 0xc000_0000).unwrap();
        c.write(0x04, &[0x06, 0]);
        c.write(0x10, &0xd000_0000u32.to_le_bytes());
        assert_eq!(c.take_bar_moves().len(), 1);
        let state = c.state();
        let mut r = PciConfiguration::new(&header());
        r.add_bar(0, m64, 0x1000, 0xc000_0000).unwrap();
        assert!(r.restore(&state));
        assert_eq!(r.bar_mapped_address(0), Some(0xd000_0000));
        assert_eq!(r.command(), 0x06);
        assert!(r.take_bar_moves().is_empty());
        let other = PciConfiguration::new(&header());
        let mut no_bar = PciConfiguration::new(&header());
        assert!(!no_bar.restore(&state), "BAR 0 missing");
        let mut short = state.clone();
        short.regs.pop();
        assert!(!r.restore(&short));
        assert_eq!(no_bar.state(), other.state(), "unchanged after a refusal");
    }

    #[test]
    fn identification_and_readonly_registers() {
        let mut c = PciConfiguration::new(&header());
        assert_eq!(c.read_dword(0), 0x1042_1af4);
        c.write(0, &[0, 0, 0, 0]);
        assert_eq!(c.read_dword(0), 0x1042_1af4);
        assert_eq!(c.read_dword(8) >> 8, 0x01_80_00);
        c.write(4, &[0xff, 0xff]);
        assert_eq!(c.command(), COMMAND_WRITABLE);
        c.set_interrupt_line(10);
        assert_eq!(c.read_dword(0x3c) & 0xff, 10);
    }

    #[test]
    fn bar32_size_probe_and_restore() {
        let mut c = PciConfiguration::new(&header());
        c.add_bar(
            0,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x1000,
            0xc000_0000,
        )
        .unwrap();
        assert_eq!(c.read_dword(0x10), 0xc000_0000);
        c.write(0x10, &[0xff; 4]);
        assert_eq!(c.read_dword(0x10), 0xffff_f000);
        c.write(0x10, &0xc000_0000u32.to_le_bytes());
        assert_eq!(c.bar_address(0), Some(0xc000_0000));
    }

    #[test]
    fn bar64_probe_and_move_reported_when_decoding_enabled() {
        let mut c = PciConfiguration::new(&header());
        c.add_bar(
            0,
            BarKind::Memory64 {
                prefetchable: false,
            },
            0x8000,
            0x1_0000_0000,
        )
        .unwrap();
        assert_eq!(c.read_dword(0x10), 0x4);
        assert_eq!(c.read_dword(0x14), 1);
        // Probe both halves with decoding enabled: no move is reported.
        c.write(4, &COMMAND_MEMORY_SPACE.to_le_bytes());
        c.write(0x10, &[0xff; 4]);
        c.write(0x14, &[0xff; 4]);
        assert_eq!(c.read_dword(0x10), 0xffff_8004);
        assert_eq!(c.read_dword(0x14), 0xffff_ffff);
        assert!(c.take_bar_moves().is_empty());
        // Reprogram with decoding off, then enable: exactly one move.
        c.write(4, &[0, 0]);
        c.write(0x10, &0xe000_0000u32.to_le_bytes());
        c.write(0x14, &2u32.to_le_bytes());
        assert!(c.take_bar_moves().is_empty());
        c.write(4, &COMMAND_MEMORY_SPACE.to_le_bytes());
        let moves = c.take_bar_moves();
        assert_eq!(moves.len(), 1);
        assert_eq!(
            (moves[0].old, moves[0].new, moves[0].len),
            (0x1_0000_0000, 0x2_e000_0000, 0x8000)
        );
        assert!(c.take_bar_moves().is_empty());
    }

    #[test]
    fn bar_validation() {
        let mut c = PciConfiguration::new(&header());
        let m64 = BarKind::Memory64 { prefetchable: true };
        assert_eq!(
            c.add_bar(5, m64, 0x1000, 0),
            Err(ConfigError::BarUnavailable(5))
        );
        assert_eq!(
            c.add_bar(0, m64, 0x1001, 0),
            Err(ConfigError::BadBarSize(0x1001))
        );
        assert!(matches!(
            c.add_bar(0, m64, 0x1000, 0x800),
            Err(ConfigError::BadBarAddress { .. })
        ));
        c.add_bar(0, m64, 0x1000, 0x1000).unwrap();
        assert_eq!(
            c.add_bar(1, BarKind::Io, 4, 0),
            Err(ConfigError::BarUnavailable(1))
        );
        assert_eq!(c.read_dword(0x10), 0x1000 | 0xc);
    }

    #[test]
    fn capability_list_is_linked() {
        let mut c = PciConfiguration::new(&header());
        let a = c.add_capability(0x09, &[4, 1], &[0, 0]).unwrap();
        let b = c
            .add_capability(CAP_ID_MSIX, &[0; 10], &[0, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0])
            .unwrap();
        assert_eq!(a, 0x40);
        assert_eq!(c.read_dword(0x34) & 0xff, 0x40);
        assert_ne!(c.read_dword(4) >> 16 & u32::from(STATUS_CAP_LIST), 0);
        assert_eq!(c.read_dword(a) >> 8 & 0xff, b as u32);
        assert_eq!(c.msix_capability(), Some(b));
        c.write(b + 2, &[0xff, 0xff]);
        assert_eq!(c.read_dword(b) >> 16, 0xc000);
        let big = vec![0u8; 300];
        assert!(c.add_capability(9, &big, &big).is_err());
    }
}
