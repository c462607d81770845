//! Interrupt delivery of a virtio PCI function: MSI-X vectors when the driver enabled
//! MSI-X, otherwise the ISR status register and the INTx line.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pci::{IntxLine, MsixTable};

use crate::transport::NO_VECTOR;

const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

/// The interrupt state a VM snapshot saves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InterruptState {
    pub msix: pci::MsixState,
    pub isr: u8,
    pub intx_disabled: bool,
    pub config_vector: u16,
    pub queue_vectors: Vec<u16>,
}

/// Vector routing and legacy interrupt state, shared by the transport (vCPU threads) and
/// the queue processor (I/O thread).
pub struct VirtioInterrupt {
    msix: Mutex<MsixTable>,
    isr: AtomicU8,
    intx: Option<Arc<dyn IntxLine>>,
    intx_disabled: AtomicBool,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
}

impl VirtioInterrupt {
    pub(crate) fn new(msix: MsixTable, intx: Option<Arc<dyn IntxLine>>, queues: usize) -> Self {
        Self {
            msix: Mutex::new(msix),
            isr: AtomicU8::new(0),
            intx,
            intx_disabled: AtomicBool::new(false),
            config_vector: AtomicU16::new(NO_VECTOR),
            queue_vectors: (0..queues).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
        }
    }

    pub(crate) fn state(&self) -> InterruptState {
        InterruptState {
            msix: self.msix().state(),
            isr: self.isr.load(Ordering::SeqCst),
            intx_disabled: self.intx_disabled.load(Ordering::SeqCst),
            config_vector: self.config_vector.load(Ordering::SeqCst),
            queue_vectors: self
                .queue_vectors
                .iter()
                .map(|v| v.load(Ordering::SeqCst))
                .collect(),
        }
    }

    /// Takes `state`; false when its vector or queue counts are not this function's.
    /// Vectors must be valid (below the table size) or NO_VECTOR.
    pub(crate) fn restore(&self, state: &InterruptState) -> bool {
        let vectors = self.msix().num_vectors();
        let valid = |v: u16| v == NO_VECTOR || v < vectors;
        if state.queue_vectors.len() != self.queue_vectors.len()
            || !valid(state.config_vector)
            || !state.queue_vectors.iter().all(|&v| valid(v))
            || !self.msix().restore(&state.msix)
        {
            return false;
        }
        self.isr.store(state.isr, Ordering::SeqCst);
        self.intx_disabled
            .store(state.intx_disabled, Ordering::SeqCst);
        self.config_vector
            .store(state.config_vector, Ordering::SeqCst);
        for (slot, &v) in self.queue_vectors.iter().zip(&state.queue_vectors) {
            slot.store(v, Ordering::SeqCst);
        }
        if state.isr != 0 && !state.intx_disabled && !self.msix().enabled() {
            if let Some(line) = &self.intx {
                line.set_level(true);
            }
        }
        true
    }

    pub(crate) fn msix(&self) -> MutexGuard<'_, MsixTable> {
        self.msix
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn signal(&self, vector: u16, isr_bit: u8) {
        {
            let mut msix = self.msix();
            if msix.enabled() {
                if vector != NO_VECTOR {
                    msix.signal(vector);
                }
                return;
            }
        }
        self.isr.fetch_or(isr_bit, Ordering::SeqCst);
        if let Some(line) = &self.intx {
            if !self.intx_disabled.load(Ordering::SeqCst) {
                line.set_level(true);
            }
        }
    }

    /// Tell the driver that queue `queue` has new used entries.
    pub fn signal_queue(&self, queue: usize) {
        let vector = self
            .queue_vectors
            .get(queue)
            .map_or(NO_VECTOR, |v| v.load(Ordering::SeqCst));
        self.signal(vector, ISR_QUEUE);
    }

    /// Tell the driver the device configuration (or DEVICE_NEEDS_RESET) changed.
    pub fn signal_config(&self) {
        self.signal(self.config_vector.load(Ordering::SeqCst), ISR_CONFIG);
    }

    /// Guest read of the ISR register: returns and clears it, lowering INTx.
    pub(crate) fn read_isr(&self) -> u8 {
        let isr = self.isr.swap(0, Ordering::SeqCst);
        if isr != 0 {
            if let Some(line) = &self.intx {
                line.set_level(false);
            }
        }
        isr
    }

    pub(crate) fn set_intx_disabled(&self, disabled: bool) {
        let was = self.intx_disabled.swap(disabled, Ordering::SeqCst);
        if let (Some(line), true) = (&self.intx, was != disabled) {
            line.set_level(!disabled && self.isr.load(Ordering::SeqCst) != 0);
        }
    }

    pub(crate) fn config_vector(&self) -> u16 {
        self.config_vector.load(Ordering::SeqCst)
    }
    pub(crate) fn set_config_vector(&self, vector: u16) {
        self.config_vector.store(vector, Ordering::SeqCst);
    }
    pub(crate) fn queue_vector(&self, queue: usize) -> u16 {
        self.queue_vectors
            .get(queue)
            .map_or(NO_VECTOR, |v| v.load(Ordering::SeqCst))
    }
    pub(crate) fn set_queue_vector(&self, queue: usize, vector: u16) {
        if let Some(v) = self.queue_vectors.get(queue) {
            v.store(vector, Ordering::SeqCst);
        }
    }

    /// Device reset: vectors unassigned, ISR clear, INTx low. The MSI-X table itself is
    /// PCI function state and survives a virtio reset.
    pub(crate) fn reset(&self) {
        self.config_vector.store(NO_VECTOR, Ordering::SeqCst);
        for v in &self.queue_vectors {
            v.store(NO_VECTOR, Ordering::SeqCst);
        }
        self.read_isr();
    }
}
