//! The PCI root complex of bus 0: a host bridge at 00.0 and devices in slots 1..=31.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::{BarMove, PciConfiguration};
use crate::host_bridge::HostBridge;

/// Bytes of ECAM space per bus (32 devices × 8 functions × 4 KiB).
pub const ECAM_BUS_SIZE: u64 = 1 << 20;
const SLOTS: usize = 32;

/// A PCI function as the root sees it.
pub trait PciDevice: Send {
    fn config(&self) -> &PciConfiguration;
    fn config_mut(&mut self) -> &mut PciConfiguration;
    /// Guest read of the dword at `offset` (4-aligned).
    fn config_read(&mut self, offset: usize) -> u32 {
        self.config().read_dword(offset)
    }
    /// Guest write of `data` at `offset`; devices override this to react to their
    /// capabilities (MSI-X control, ...), calling the configuration's `write`.
    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config_mut().write(offset, data);
    }
}

/// Told when the guest moves a BAR. Called on the vCPU thread doing the config write, with
/// the root locked and the device unlocked; the guest resumes only after it returns, so the
/// VMM can move the bus range (and ioeventfds) before the next access.
pub trait BarMoveHandler: Send + Sync {
    fn move_bar(&self, mv: &BarMove);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RootError {
    #[error("PCI slot {0} is not in 1..=31 or is taken")]
    SlotUnavailable(u8),
    #[error("no free PCI slot on bus 0")]
    BusFull,
}

type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// Bus 0 of the PCI hierarchy.
pub struct PciRoot {
    slots: Vec<Option<SharedPciDevice>>,
    bar_moves: Option<Arc<dyn BarMoveHandler>>,
}

fn lock(device: &SharedPciDevice) -> MutexGuard<'_, dyn PciDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PciRoot {
    /// A root with the host bridge in slot 0. `bar_moves` is told about BAR relocations.
    pub fn new(bar_moves: Option<Arc<dyn BarMoveHandler>>) -> Self {
        let mut slots: Vec<Option<SharedPciDevice>> = vec![None; SLOTS];
        slots[0] = Some(Arc::new(Mutex::new(HostBridge::new())));
        Self { slots, bar_moves }
    }

    /// Plug `device` into `slot` (1..=31), or the first free slot when `None`. Returns the slot.
    pub fn add_device(
        &mut self,
        slot: Option<u8>,
        device: SharedPciDevice,
    ) -> Result<u8, RootError> {
        let slot = match slot {
            Some(s) if (1..SLOTS as u8).contains(&s) && self.slots[usize::from(s)].is_none() => s,
            Some(s) => return Err(RootError::SlotUnavailable(s)),
            None => (1..SLOTS)
                .find(|&s| self.slots[s].is_none())
                .ok_or(RootError::BusFull)? as u8,
        };
        self.slots[usize::from(slot)] = Some(device);
        Ok(slot)
    }

    fn function(&self, bus: u8, device: u8, function: u8) -> Option<&SharedPciDevice> {
        if bus != 0 || function != 0 {
            return None;
        }
        self.slots.get(usize::from(device))?.as_ref()
    }

    /// Dword read at a 4-aligned `offset`; absent functions read all-ones.
    pub fn config_read(&self, bus: u8, device: u8, function: u8, offset: usize) -> u32 {
        match self.function(bus, device, function) {
            Some(dev) => lock(dev).config_read(offset & !3),
            None => u32::MAX,
        }
    }

    /// Write `data` (1, 2 or 4 bytes) at `offset`, then report BAR moves.
    pub fn config_write(&self, bus: u8, device: u8, function: u8, offset: usize, data: &[u8]) {
        let Some(dev) = self.function(bus, device, function) else {
            return;
        };
        let moves = {
            let mut guard = lock(dev);
            guard.config_write(offset, data);
            guard.config_mut().take_bar_moves()
        };
        if let Some(handler) = &self.bar_moves {
            for mut mv in moves {
                mv.slot = device;
                handler.move_bar(&mv);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BarKind, PciHeader, COMMAND_MEMORY_SPACE};

    pub(crate) struct Plain(pub PciConfiguration);
    impl PciDevice for Plain {
        fn config(&self) -> &PciConfiguration {
            &self.0
        }
        fn config_mut(&mut self) -> &mut PciConfiguration {
            &mut self.0
        }
    }

    #[derive(Default)]
    struct Moves(Mutex<Vec<BarMove>>);
    impl BarMoveHandler for Moves {
        fn move_bar(&self, mv: &BarMove) {
            self.0.lock().unwrap().push(*mv);
        }
    }

    #[test]
    fn slots_and_absent_functions() {
        let mut root = PciRoot::new(None);
        assert_eq!(root.config_read(0, 0, 0, 0) & 0xffff, 0x8086);
        assert_eq!(root.config_read(0, 3, 0, 0), u32::MAX);
        assert_eq!(root.config_read(1, 0, 0, 0), u32::MAX);
        assert_eq!(root.config_read(0, 0, 1, 0), u32::MAX);
        let dev = Arc::new(Mutex::new(Plain(PciConfiguration::new(&PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1041,
            ..Default::default()
        }))));
        assert_eq!(root.add_device(None, dev.clone()), Ok(1));
        assert_eq!(
            root.add_device(Some(1), dev.clone()),
            Err(RootError::SlotUnavailable(1))
        );
        assert_eq!(
            root.add_device(Some(0), dev.clone()),
            Err(RootError::SlotUnavailable(0))
        );
        assert_eq!(root.add_device(Some(31), dev.clone()), Ok(31));
        assert_eq!(root.config_read(0, 1, 0, 2), 0x1041_1af4);
    }

    #[test]
    fn bar_reprogramming_reaches_the_handler() {
        let moves = Arc::new(Moves::default());
        let mut root = PciRoot::new(Some(moves.clone()));
        let mut cfg = PciConfiguration::new(&PciHeader::default());
        cfg.add_bar(
            0,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x1000,
            0xd000_0000,
        )
        .unwrap();
        let slot = root
            .add_device(None, Arc::new(Mutex::new(Plain(cfg))))
            .unwrap();
        root.config_write(0, slot, 0, 4, &COMMAND_MEMORY_SPACE.to_le_bytes());
        root.config_write(0, slot, 0, 0x10, &[0xff; 4]);
        assert_eq!(root.config_read(0, slot, 0, 0x10), 0xffff_f000);
        root.config_write(0, slot, 0, 0x10, &0xd000_0000u32.to_le_bytes());
        assert!(moves.0.lock().unwrap().is_empty());
        root.config_write(0, slot, 0, 0x10, &0xd010_0000u32.to_le_bytes());
        let got = moves.0.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].slot, got[0].bar, got[0].old, got[0].new),
            (slot, 0, 0xd000_0000, 0xd010_0000)
        );
    }
}
