//! MSI-X: the vector table and pending-bit array a device exposes in a BAR, the
//! capability's enable / function-mask bits, and delivery through [`MsiInterrupt`].

use std::sync::Arc;

use crate::{MsiInterrupt, MsiMessage};

/// Bytes per table entry.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// The architectural maximum table size.
pub const MSIX_MAX_VECTORS: u16 = 2048;

const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;

#[derive(Debug, Clone, Copy)]
struct Entry {
    msg: MsiMessage,
    masked: bool,
}

impl Default for Entry {
    fn default() -> Self {
        // Every vector is masked after reset.
        Self {
            msg: MsiMessage::default(),
            masked: true,
        }
    }
}

/// The guest-visible MSI-X state, for VM snapshots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MsixState {
    /// Per vector: (message address, message data, masked).
    pub entries: Vec<(u64, u32, bool)>,
    pub pending: Vec<u64>,
    pub enabled: bool,
    pub function_mask: bool,
}

/// MSI-X state of one function.
pub struct MsixTable {
    entries: Vec<Entry>,
    pending: Vec<u64>,
    enabled: bool,
    function_mask: bool,
    route: Arc<dyn MsiInterrupt>,
}

impl MsixTable {
    /// A table of `vectors` entries (clamped to 1..=2048) delivering through `route`.
    pub fn new(vectors: u16, route: Arc<dyn MsiInterrupt>) -> Self {
        let n = usize::from(vectors.clamp(1, MSIX_MAX_VECTORS));
        Self {
            entries: vec![Entry::default(); n],
            pending: vec![0; n.div_ceil(64)],
            enabled: false,
            function_mask: false,
            route,
        }
    }

    pub fn state(&self) -> MsixState {
        MsixState {
            entries: self
                .entries
                .iter()
                .map(|e| (e.msg.address, e.msg.data, e.masked))
                .collect(),
            pending: self.pending.clone(),
            enabled: self.enabled,
            function_mask: self.function_mask,
        }
    }

    /// Takes `state` and routes every vector accordingly; false, leaving the table
    /// unchanged, when its vector count differs from this table's.
    pub fn restore(&mut self, state: &MsixState) -> bool {
        if state.entries.len() != self.entries.len() || state.pending.len() != self.pending.len() {
            return false;
        }
        for (entry, &(address, data, masked)) in self.entries.iter_mut().zip(&state.entries) {
            *entry = Entry {
                msg: MsiMessage { address, data },
                masked,
            };
        }
        self.pending.copy_from_slice(&state.pending);
        self.enabled = state.enabled;
        self.function_mask = state.function_mask;
        for vector in 0..self.entries.len() {
            self.publish(vector);
        }
        true
    }

    /// Where vectors are delivered (for a device whose server signals irqfds itself).
    pub fn route(&self) -> Arc<dyn MsiInterrupt> {
        self.route.clone()
    }

    pub fn num_vectors(&self) -> u16 {
        self.entries.len() as u16
    }

    /// Bytes of the table and of the PBA.
    pub fn table_len(&self) -> u64 {
        self.entries.len() as u64 * MSIX_ENTRY_SIZE
    }
    pub fn pba_len(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    /// Capability body (after ID and next pointer) and its write mask, for a table at
    /// `table_offset` and a PBA at `pba_offset` of BAR `bar`.
    pub fn capability(&self, bar: u8, table_offset: u32, pba_offset: u32) -> ([u8; 10], [u8; 10]) {
        let mut body = [0u8; 10];
        body[0..2].copy_from_slice(&(self.num_vectors() - 1).to_le_bytes());
        body[2..6].copy_from_slice(&(table_offset | u32::from(bar & 7)).to_le_bytes());
        body[6..10].copy_from_slice(&(pba_offset | u32::from(bar & 7)).to_le_bytes());
        let mut mask = [0u8; 10];
        mask[1] = 0xc0;
        (body, mask)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }
    pub fn function_masked(&self) -> bool {
        self.function_mask
    }

    /// Apply the capability's message control word (as written by the guest).
    pub fn set_control(&mut self, control: u16) {
        let enabled = control & CONTROL_ENABLE != 0;
        let function_mask = control & CONTROL_FUNCTION_MASK != 0;
        if enabled == self.enabled && function_mask == self.function_mask {
            return;
        }
        self.enabled = enabled;
        self.function_mask = function_mask;
        for vector in 0..self.entries.len() {
            self.publish(vector);
            self.deliver_if_pending(vector);
        }
    }

    fn effective_mask(&self, vector: usize) -> bool {
        !self.enabled || self.function_mask || self.entries[vector].masked
    }

    fn publish(&self, vector: usize) {
        self.route.update(
            vector as u16,
            self.entries[vector].msg,
            self.effective_mask(vector),
        );
    }

    fn is_pending(&self, vector: usize) -> bool {
        self.pending[vector / 64] & (1 << (vector % 64)) != 0
    }

    fn set_pending(&mut self, vector: usize, pending: bool) {
        let bit = 1u64 << (vector % 64);
        if pending {
            self.pending[vector / 64] |= bit;
        } else {
            self.pending[vector / 64] &= !bit;
        }
    }

    fn deliver_if_pending(&mut self, vector: usize) {
        if self.is_pending(vector) && !self.effective_mask(vector) {
            self.set_pending(vector, false);
            self.route.trigger(vector as u16);
        }
    }

    /// Signal `vector`. Returns false when MSI-X is disabled or the vector does not exist
    /// (the caller then falls back to INTx or drops it); a masked vector becomes pending
    /// and fires when unmasked.
    pub fn signal(&mut self, vector: u16) -> bool {
        let v = usize::from(vector);
        if !self.enabled || v >= self.entries.len() {
            return false;
        }
        if self.effective_mask(v) {
            self.set_pending(v, true);
        } else {
            self.route.trigger(vector);
        }
        true
    }

    /// Guest read of the table at `offset` (4- or 8-byte aligned accesses; others read 0).
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some((vector, field)) = self.locate(offset, data.len()) else {
            return;
        };
        let e = &self.entries[vector];
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&e.msg.address.to_le_bytes());
        raw[8..12].copy_from_slice(&e.msg.data.to_le_bytes());
        raw[12..16].copy_from_slice(&u32::from(e.masked).to_le_bytes());
        data.copy_from_slice(&raw[field..field + data.len()]);
    }

    /// Guest write of the table at `offset`.
    pub fn write_table(&mut self, offset: u64, data: &[u8]) {
        let Some((vector, field)) = self.locate(offset, data.len()) else {
            return;
        };
        let before = self.entries[vector];
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&before.msg.address.to_le_bytes());
        raw[8..12].copy_from_slice(&before.msg.data.to_le_bytes());
        raw[12..16].copy_from_slice(&u32::from(before.masked).to_le_bytes());
        raw[field..field + data.len()].copy_from_slice(data);
        let entry = &mut self.entries[vector];
        entry.msg.address = u64::from_le_bytes(raw[0..8].try_into().unwrap_or_default());
        entry.msg.data = u32::from_le_bytes(raw[8..12].try_into().unwrap_or_default());
        entry.masked = raw[12] & 1 != 0;
        let after = *entry;
        if after.msg != before.msg || after.masked != before.masked {
            self.publish(vector);
        }
        self.deliver_if_pending(vector);
    }

    /// Guest read of the pending-bit array (read-only).
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if !matches!(data.len(), 4 | 8) || !offset.is_multiple_of(data.len() as u64) {
            return;
        }
        for (i, byte) in data.iter_mut().enumerate() {
            let o = offset as usize + i;
            if let Some(word) = self.pending.get(o / 8) {
                *byte = (word >> (8 * (o % 8))) as u8;
            }
        }
    }

    /// Vector and byte offset inside its entry of an aligned 4/8-byte access.
    fn locate(&self, offset: u64, len: usize) -> Option<(usize, usize)> {
        if !matches!(len, 4 | 8) || !offset.is_multiple_of(len as u64) {
            return None;
        }
        let vector = usize::try_from(offset / MSIX_ENTRY_SIZE).ok()?;
        (vector < self.entries.len()).then_some((vector, (offset % MSIX_ENTRY_SIZE) as usize))
    }

    /// Back to the power-on state: disabled, all vectors masked, nothing pending.
    pub fn reset(&mut self) {
        self.entries.fill(Entry::default());
        self.pending.fill(0);
        self.enabled = false;
        self.function_mask = false;
        for vector in 0..self.entries.len() {
            self.publish(vector);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        fired: Mutex<Vec<u16>>,
        updates: Mutex<Vec<(u16, MsiMessage, bool)>>,
    }
    impl MsiInterrupt for Recorder {
        fn update(&self, vector: u16, msg: MsiMessage, masked: bool) {
            self.updates.lock().unwrap().push((vector, msg, masked));
        }
        fn trigger(&self, vector: u16) {
            self.fired.lock().unwrap().push(vector);
        }
    }

    fn program(t: &mut MsixTable, vector: u64, addr: u64, data: u32, masked: bool) {
        t.write_table(vector * 16, &(addr as u32).to_le_bytes());
        t.write_table(vector * 16 + 4, &((addr >> 32) as u32).to_le_bytes());
        t.write_table(vector * 16 + 8, &data.to_le_bytes());
        t.write_table(vector * 16 + 12, &u32::from(masked).to_le_bytes());
    }

    #[test]
    fn disabled_table_does_not_deliver() {
        let rec = Arc::new(Recorder::default());
        let mut t = MsixTable::new(2, rec.clone());
        assert!(!t.signal(0));
        assert!(rec.fired.lock().unwrap().is_empty());
    }

    #[test]
    fn masked_vector_goes_pending_and_fires_on_unmask() {
        let rec = Arc::new(Recorder::default());
        let mut t = MsixTable::new(3, rec.clone());
        t.set_control(CONTROL_ENABLE);
        program(&mut t, 1, 0xfee0_0000, 0x41, true);
        assert!(t.signal(1));
        let mut pba = [0u8; 8];
        t.read_pba(0, &mut pba);
        assert_eq!(u64::from_le_bytes(pba), 0b10);
        assert!(rec.fired.lock().unwrap().is_empty());
        t.write_table(16 + 12, &0u32.to_le_bytes());
        assert_eq!(*rec.fired.lock().unwrap(), vec![1]);
        t.read_pba(0, &mut pba);
        assert_eq!(u64::from_le_bytes(pba), 0);
        let last = *rec.updates.lock().unwrap().last().unwrap();
        assert_eq!(
            last,
            (
                1,
                MsiMessage {
                    address: 0xfee0_0000,
                    data: 0x41
                },
                false
            )
        );
        assert!(t.signal(1));
        assert_eq!(*rec.fired.lock().unwrap(), vec![1, 1]);
    }

    #[test]
    fn function_mask_holds_all_vectors() {
        let rec = Arc::new(Recorder::default());
        let mut t = MsixTable::new(2, rec.clone());
        program(&mut t, 0, 0xfee0_0000, 0x30, false);
        t.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        assert!(t.signal(0));
        assert!(rec.fired.lock().unwrap().is_empty());
        t.set_control(CONTROL_ENABLE);
        assert_eq!(*rec.fired.lock().unwrap(), vec![0]);
    }

    #[test]
    fn table_reads_back_and_rejects_odd_accesses() {
        let rec = Arc::new(Recorder::default());
        let mut t = MsixTable::new(1, rec);
        program(&mut t, 0, 0x1_fee0_1000, 7, false);
        let mut q = [0u8; 8];
        t.read_table(0, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x1_fee0_1000);
        let mut b = [0xaau8; 2];
        t.read_table(8, &mut b);
        assert_eq!(b, [0, 0]);
        t.write_table(16, &[1, 2, 3, 4]); // past the table: ignored
        t.write_table(2, &[1, 2]);
        t.read_table(0, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x1_fee0_1000);
        assert!(!t.signal(5));
    }
}
