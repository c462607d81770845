//! DRIVER_OK of a device whose queues another process serves ([`crate::external`]): the
//! transport hands over each enabled queue with its notify eventfd and the eventfd that
//! interrupts the driver for it, and its next available index (0, or where the server
//! stopped before a snapshot). Snapshots pause the server and start it again; a restored
//! device's server gets its queues when the VM's vCPUs first run.

use std::sync::atomic::Ordering;

use vmm_sys_util::eventfd::EventFd;

use super::state::StateError;
use super::{VirtioPciDevice, NO_VECTOR};
use crate::external::{ExternalQueue, QueueServerError};
use crate::features::{RING_EVENT_IDX, RING_INDIRECT_DESC};
use crate::processor::lock;
use crate::queue::{Queue, QueueLayout};

impl VirtioPciDevice {
    /// Hand the enabled queues to the device's server. A refusal (the server is gone, a
    /// ring lies outside guest memory) sets DEVICE_NEEDS_RESET.
    pub(super) fn start_external(&mut self, signal: bool) {
        if let Err(e) = self.try_start_external(signal) {
            tracing::error!("{e}; the device needs a reset");
            self.shared.fail();
        }
    }

    /// Hand the enabled queues to the device's server, or the server's refusal. With
    /// `signal` (queues coming back from a pause or a restore), each queue is then kicked
    /// and its driver interrupted once: requests queued meanwhile get looked at, and a
    /// completion whose interrupt a snapshot missed cannot leave the driver waiting (a
    /// spurious interrupt is harmless).
    pub(super) fn try_start_external(&mut self, signal: bool) -> Result<(), QueueServerError> {
        let shared = &*self.shared;
        let (route, msix_enabled) = {
            let msix = shared.interrupt.msix();
            (msix.route(), msix.enabled())
        };
        let mut queues = Vec::new();
        for (index, regs) in self.queues.iter().enumerate() {
            if !regs.enabled {
                continue;
            }
            let (Some(kick), Some(relay)) = (shared.notifiers.get(index), shared.relays.get(index))
            else {
                continue;
            };
            let vector = shared.interrupt.queue_vector(index);
            let irqfd: Option<&EventFd> = if msix_enabled && vector != NO_VECTOR {
                route.irqfd(vector)
            } else {
                None
            };
            let next_avail = lock(&shared.queues[index])
                .as_ref()
                .map_or(0, Queue::next_avail);
            queues.push(ExternalQueue {
                index,
                layout: QueueLayout {
                    size: regs.size,
                    desc: regs.desc,
                    avail: regs.driver,
                    used: regs.device,
                },
                next_avail,
                kick,
                // INTx or no vector: the I/O thread relays (QueueProcessor::relay_call).
                call: irqfd.unwrap_or(relay),
            });
        }
        let started = lock(&shared.device)
            .queue_server()
            .map(|server| server.start(self.driver_features, &shared.mem, &queues));
        started.unwrap_or(Ok(()))?;
        if signal {
            for q in &queues {
                let _ = q.kick.write(1);
                let _ = q.call.write(1);
            }
        }
        Ok(())
    }
}

impl VirtioPciDevice {
    /// Before a snapshot (VM paused): a device whose queues another process serves takes
    /// them back and has the server save its state; each enabled ring's saved index
    /// becomes the server's. Nothing to do for other devices. The server gets its queues
    /// back from [`resume_external`](Self::resume_external), when the VM runs again.
    pub fn pause_external(&mut self) -> Result<(), StateError> {
        if !self.shared.is_external() {
            return Ok(());
        }
        let paused = lock(&self.shared.device)
            .queue_server()
            .map(|server| server.pause());
        let (bases, failed) = match paused {
            None => return Ok(()),
            Some(Ok(bases)) => (bases, None),
            Some(Err(e)) => (e.stopped, Some(e.error)),
        };
        // Even after a failure part-way: the queues it stopped start again at the resume.
        self.external_paused = true;
        self.resume_rings_at(&bases)?;
        if let Some(e) = failed {
            return Err(StateError::External(e));
        }
        let saved = lock(&self.shared.device).queue_server().map(|s| s.save());
        saved.unwrap_or(Ok(())).map_err(StateError::External)
    }

    /// The enabled rings of `bases` (queue, next available index) resumed at them.
    fn resume_rings_at(&mut self, bases: &[(usize, u16)]) -> Result<(), StateError> {
        let shared = &*self.shared;
        let event_idx = self.driver_features & RING_EVENT_IDX != 0;
        let indirect = self.driver_features & RING_INDIRECT_DESC != 0;
        for &(index, base) in bases {
            let Some(regs) = self.queues.get(index).filter(|r| r.enabled) else {
                continue;
            };
            let layout = QueueLayout {
                size: regs.size,
                desc: regs.desc,
                avail: regs.driver,
                used: regs.device,
            };
            let ring =
                Queue::resume(&shared.mem, layout, event_idx, indirect, base).map_err(|e| {
                    StateError::Queue {
                        index,
                        reason: e.to_string(),
                    }
                })?;
            *lock(&shared.queues[index]) = Some(ring);
        }
        Ok(())
    }

    /// The VM's vCPUs run (again): a server a snapshot paused, or a restored device's, gets
    /// its queues where it stopped (when the driver had set DRIVER_OK and the device is not
    /// broken), each queue kicked and its driver interrupted once. Nothing to do when
    /// no snapshot paused it and it was not restored.
    pub fn resume_external(&mut self) {
        if !std::mem::take(&mut self.external_paused) {
            return;
        }
        let shared = &*self.shared;
        if shared.driver_ok.load(Ordering::SeqCst) && !shared.needs_reset.load(Ordering::SeqCst) {
            self.start_external(true);
        }
    }
}
