//! The transport's state in a VM snapshot ([`Persist`] for [`VirtioPciDevice`]):
//! configuration space, MSI-X and interrupt routing, feature and status registers, per
//! queue its registers and the index of the next available entry, and the device model's
//! own state ([`DeviceState`], saved by the model's `Persist`). A restored device is
//! re-activated with the negotiated features and its rings resumed where they were.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use pci::{IntxLine, MsiInterrupt};
use vm_memory::GuestMemoryMmap;

use super::{QueueRegs, TransportError, VirtioPciDevice};
use crate::device::VirtioDevice;
use crate::features::{RING_EVENT_IDX, RING_INDIRECT_DESC};
use crate::interrupt::InterruptState;
use crate::persist::{DeviceState, Persist};
use crate::processor::lock;
use crate::queue::{Queue, QueueLayout};
use crate::status;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    pub size: u16,
    pub enabled: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    /// The next available entry the device takes (for enabled queues).
    pub next_avail: u16,
}

/// Format version of [`VirtioPciState`].
pub const TRANSPORT_STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioPciState {
    pub version: u32,
    /// The device type (virtio ids: 2 block, 4 rng, ...), checked on restore.
    pub device_type: u16,
    pub config: pci::PciConfigState,
    pub interrupt: InterruptState,
    pub device_feature_select: u32,
    pub driver_feature_select: u32,
    pub driver_features: u64,
    pub status: u8,
    pub queue_select: u16,
    pub queues: Vec<QueueState>,
    pub config_generation: u8,
    pub needs_reset: bool,
    /// The device model's own state.
    pub device: DeviceState,
}

/// What [`VirtioPciDevice::new`] takes: the device model (already restored from the
/// state's [`DeviceState`] by its own `Persist`), guest memory, BAR and interrupts.
pub struct TransportArgs {
    pub device: Box<dyn VirtioDevice>,
    pub mem: GuestMemoryMmap,
    pub bar_addr: u64,
    pub msi: Arc<dyn MsiInterrupt>,
    pub intx: Option<Arc<dyn IntxLine>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("virtio transport state version {found} is not supported (this vessel reads version {TRANSPORT_STATE_VERSION})")]
    Version { found: u32 },
    #[error("the state is of virtio device type {found}, not {expected}")]
    DeviceType { found: u16, expected: u16 },
    #[error("{found} queues saved where the device has {expected}")]
    QueueCount { found: usize, expected: usize },
    #[error("queue {index}: {reason}")]
    Queue { index: usize, reason: String },
    #[error(
        "the device model's state is for virtio device type {found}, the device is {expected}"
    )]
    DeviceStateType { found: u16, expected: u16 },
    #[error("creating the device: {0}")]
    Transport(#[from] TransportError),
    #[error("PCI configuration space does not match the device")]
    Config,
    #[error("MSI-X or interrupt state does not match the device")]
    Interrupt,
    #[error("driver features {0:#x} include ones the device does not offer")]
    Features(u64),
    #[error(transparent)]
    External(crate::external::QueueServerError),
}

impl VirtioPciDevice {
    /// Calls `f` with the state to save while every queue stays locked, so the I/O thread
    /// neither finishes nor starts a request (which would change guest memory and the
    /// rings) until `f` returns: the caller saves guest memory inside `f`. Call with the VM
    /// paused; a request being processed is waited for.
    pub fn with_frozen_state<R>(&self, f: impl FnOnce(VirtioPciState) -> R) -> R {
        let held: Vec<_> = self.shared.queues.iter().map(|q| lock(q)).collect();
        let queues = self
            .queues
            .iter()
            .zip(&held)
            .map(|(regs, queue)| QueueState {
                size: regs.size,
                enabled: regs.enabled,
                desc: regs.desc,
                driver: regs.driver,
                device: regs.device,
                next_avail: queue.as_ref().map_or(0, Queue::next_avail),
            })
            .collect();
        let (device_type, device) = {
            let model = lock(&self.shared.device);
            (model.device_type(), model.save_state())
        };
        let state = VirtioPciState {
            version: TRANSPORT_STATE_VERSION,
            device_type,
            config: self.config.state(),
            interrupt: self.shared.interrupt.state(),
            device_feature_select: self.device_feature_select,
            driver_feature_select: self.driver_feature_select,
            driver_features: self.driver_features,
            status: self.status,
            queue_select: self.queue_select,
            queues,
            config_generation: self.shared.config_generation.load(Ordering::SeqCst),
            needs_reset: self.shared.needs_reset.load(Ordering::SeqCst),
            device,
        };
        let result = f(state);
        drop(held);
        result
    }

    /// Takes `state` (untrusted: checked against this device first) into a device that
    /// has not run: registers, interrupts, activation with the negotiated features when
    /// the driver had set DRIVER_OK, and every enabled ring resumed at its saved index.
    /// The device model's own state is not applied here (see [`TransportArgs`]).
    pub fn restore_registers(&mut self, state: &VirtioPciState) -> Result<(), StateError> {
        self.check_state(state)?;
        let rings = self.resume_saved_rings(state)?;
        // Each restore checks before it changes anything; a failure here fails the whole
        // VM restore, which discards the device.
        if !self.shared.interrupt.restore(&state.interrupt) {
            return Err(StateError::Interrupt);
        }
        if !self.config.restore(&state.config) {
            return Err(StateError::Config);
        }
        self.device_feature_select = state.device_feature_select;
        self.driver_feature_select = state.driver_feature_select;
        self.driver_features = state.driver_features;
        self.status = state.status;
        self.queue_select = state.queue_select;
        for ((regs, saved), (slot, ring)) in self
            .queues
            .iter_mut()
            .zip(&state.queues)
            .zip(self.shared.queues.iter().zip(rings))
        {
            *regs = QueueRegs {
                max_size: regs.max_size,
                size: saved.size,
                enabled: saved.enabled,
                desc: saved.desc,
                driver: saved.driver,
                device: saved.device,
            };
            *lock(slot) = ring;
        }
        self.shared
            .config_generation
            .store(state.config_generation, Ordering::SeqCst);
        self.shared
            .needs_reset
            .store(state.needs_reset, Ordering::SeqCst);
        if state.status & status::DRIVER_OK != 0 {
            self.restore_driver_ok(state);
        }
        Ok(())
    }

    /// `state` (untrusted) fits this device: version, device type, queue count, features.
    fn check_state(&self, state: &VirtioPciState) -> Result<(), StateError> {
        if state.version != TRANSPORT_STATE_VERSION {
            return Err(StateError::Version {
                found: state.version,
            });
        }
        let expected = lock(&self.shared.device).device_type();
        if state.device_type != expected {
            return Err(StateError::DeviceType {
                found: state.device_type,
                expected,
            });
        }
        if let Some(found) = state.device.device_type().filter(|&t| t != expected) {
            return Err(StateError::DeviceStateType { found, expected });
        }
        if state.queues.len() != self.queues.len() {
            return Err(StateError::QueueCount {
                found: state.queues.len(),
                expected: self.queues.len(),
            });
        }
        if state.driver_features & !self.device_features != 0 {
            return Err(StateError::Features(state.driver_features));
        }
        Ok(())
    }

    /// Each of `state`'s enabled rings resumed at its saved index (checked against guest
    /// memory and this device's queue sizes); nothing is changed yet.
    fn resume_saved_rings(&self, state: &VirtioPciState) -> Result<Vec<Option<Queue>>, StateError> {
        let event_idx = state.driver_features & RING_EVENT_IDX != 0;
        let indirect = state.driver_features & RING_INDIRECT_DESC != 0;
        let mut rings = Vec::with_capacity(state.queues.len());
        for (index, (saved, regs)) in state.queues.iter().zip(&self.queues).enumerate() {
            if saved.size > regs.max_size {
                return Err(StateError::Queue {
                    index,
                    reason: format!("size {} above the maximum {}", saved.size, regs.max_size),
                });
            }
            let ring = if saved.enabled {
                let layout = QueueLayout {
                    size: saved.size,
                    desc: saved.desc,
                    avail: saved.driver,
                    used: saved.device,
                };
                Some(
                    Queue::resume(
                        &self.shared.mem,
                        layout,
                        event_idx,
                        indirect,
                        saved.next_avail,
                    )
                    .map_err(|e| StateError::Queue {
                        index,
                        reason: e.to_string(),
                    })?,
                )
            } else {
                None
            };
            rings.push(ring);
        }
        Ok(rings)
    }

    /// A restored device the driver had set DRIVER_OK on: activated with the negotiated
    /// features; its queues looked at (a server's given to it when the vCPUs run).
    fn restore_driver_ok(&mut self, state: &VirtioPciState) {
        lock(&self.shared.device).activate(state.driver_features);
        self.shared.driver_ok.store(true, Ordering::SeqCst);
        if self.shared.is_external() {
            // A server (virtiofsd) takes its queues at the saved indices, and is kicked,
            // only when the vCPUs run (resume_external): not while a migrated VM waits
            // for the sender's go, which may never come.
            self.external_paused = !state.needs_reset;
        } else {
            // Requests the driver queued before the snapshot get looked at.
            for evt in &self.shared.notifiers {
                let _ = evt.write(1);
            }
        }
    }
}

impl Persist for VirtioPciDevice {
    type State = VirtioPciState;
    type ConstructorArgs = TransportArgs;
    type Error = StateError;

    /// The state now; a VM snapshot uses [`VirtioPciDevice::with_frozen_state`] instead,
    /// to keep the queues still while guest memory is saved.
    fn save(&self) -> VirtioPciState {
        self.with_frozen_state(|state| state)
    }

    fn restore(args: TransportArgs, state: &VirtioPciState) -> Result<Self, StateError> {
        let mut dev =
            VirtioPciDevice::new(args.device, args.mem, args.bar_addr, args.msi, args.intx)?;
        dev.restore_registers(state)?;
        Ok(dev)
    }
}
