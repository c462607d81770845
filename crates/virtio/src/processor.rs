//! The I/O-thread side of a virtio device: state shared with the transport, and
//! [`QueueProcessor`], which runs a queue's requests after a kick.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::device::VirtioDevice;
use crate::interrupt::VirtioInterrupt;
use crate::queue::{Queue, QueueError};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("queue {0} does not exist")]
    NoSuchQueue(usize),
    #[error("queue {queue} is broken, the device needs a reset: {source}")]
    Queue {
        queue: usize,
        #[source]
        source: QueueError,
    },
}

pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// State of one device shared between the transport and the queue processor.
pub(crate) struct Shared {
    pub mem: GuestMemoryMmap,
    pub device: Mutex<Box<dyn VirtioDevice>>,
    /// A queue is `Some` once the driver enabled it with a valid layout.
    pub queues: Vec<Mutex<Option<Queue>>>,
    pub interrupt: VirtioInterrupt,
    /// One per queue: written by a notify access (or by KVM as an ioeventfd).
    pub notifiers: Vec<EventFd>,
    /// For a device whose queues another process serves ([`crate::external`]): one per
    /// queue, written by that server when the queue has no irqfd to signal (INTx, no
    /// vector); empty for other devices.
    pub relays: Vec<EventFd>,
    pub driver_ok: AtomicBool,
    pub needs_reset: AtomicBool,
    pub config_generation: AtomicU8,
}

impl Shared {
    pub fn is_external(&self) -> bool {
        !self.relays.is_empty()
    }

    pub fn fail(&self) {
        if !self.needs_reset.swap(true, Ordering::SeqCst) {
            self.config_generation.fetch_add(1, Ordering::SeqCst);
            self.interrupt.signal_config();
        }
    }
}

/// Runs device work off the vCPU threads. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct QueueProcessor {
    pub(crate) shared: Arc<Shared>,
}

impl QueueProcessor {
    pub fn num_queues(&self) -> usize {
        self.shared.queues.len()
    }

    /// The eventfd kicked when the driver notifies queue `queue` (the same fd the
    /// transport's notify registers write and the VMM registers as an ioeventfd).
    pub fn notifier(&self, queue: usize) -> Option<&EventFd> {
        self.shared.notifiers.get(queue)
    }

    /// Whether another process serves the queues ([`crate::external`]): the I/O thread
    /// then watches [`QueueProcessor::call_relay`] instead of the notifiers, whose kicks
    /// are that server's to read.
    pub fn is_external(&self) -> bool {
        self.shared.is_external()
    }

    /// The relay eventfd of `queue` of an external device.
    pub fn call_relay(&self, queue: usize) -> Option<&EventFd> {
        self.shared.relays.get(queue)
    }

    /// The external server signalled `queue` through its relay: interrupt the driver
    /// (ISR and INTx, or the queue's MSI-X vector).
    pub fn relay_call(&self, queue: usize) -> Result<(), ProcessError> {
        let evt = self
            .call_relay(queue)
            .ok_or(ProcessError::NoSuchQueue(queue))?;
        if evt.read().is_ok() {
            self.shared.interrupt.signal_queue(queue);
        }
        Ok(())
    }

    /// Consume a pending kick of `queue` (non-blocking) and process the queue.
    pub fn handle_notify(&self, queue: usize) -> Result<(), ProcessError> {
        let evt = self
            .notifier(queue)
            .ok_or(ProcessError::NoSuchQueue(queue))?;
        // EAGAIN just means nobody kicked since the last read.
        let _ = evt.read();
        self.process_queue(queue)
    }

    /// Process the available requests of `queue` and interrupt the driver as it asked.
    /// Does nothing before DRIVER_OK, for a disabled queue, or once the device needs a
    /// reset. If the device stops with work left it re-kicks the queue's eventfd.
    pub fn process_queue(&self, queue: usize) -> Result<(), ProcessError> {
        let shared = &*self.shared;
        let slot = shared
            .queues
            .get(queue)
            .ok_or(ProcessError::NoSuchQueue(queue))?;
        if !shared.driver_ok.load(Ordering::SeqCst)
            || shared.needs_reset.load(Ordering::SeqCst)
            || self.is_external()
        {
            return Ok(());
        }
        let mut slot = lock(slot);
        let Some(q) = slot.as_mut() else {
            return Ok(());
        };
        let (run, config_changed) = {
            let mut device = lock(&shared.device);
            let run = crate::device::run_queue(device.as_mut(), queue, q, &shared.mem);
            (run, device.take_config_change())
        };
        drop(slot);
        if config_changed {
            self.signal_config_change();
        }
        if run.interrupt {
            shared.interrupt.signal_queue(queue);
        }
        match run.more {
            Ok(more) => {
                if more {
                    let _ = shared.notifiers[queue].write(1);
                }
                Ok(())
            }
            Err(source) => {
                shared.fail();
                Err(ProcessError::Queue { queue, source })
            }
        }
    }

    /// Runs `f` on the device model, between requests (the I/O thread holds the same lock
    /// while it processes a queue).
    pub fn with_device<R>(&self, f: impl FnOnce(&mut dyn VirtioDevice) -> R) -> R {
        let mut device = lock(&self.shared.device);
        f(device.as_mut())
    }

    /// The device changed its configuration (e.g. console size): bump the generation and
    /// send a configuration-change interrupt.
    pub fn signal_config_change(&self) {
        self.shared.config_generation.fetch_add(1, Ordering::SeqCst);
        self.shared.interrupt.signal_config();
    }

    /// Whether the device flagged DEVICE_NEEDS_RESET.
    pub fn needs_reset(&self) -> bool {
        self.shared.needs_reset.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<super::QueueProcessor>();
        send::<crate::VirtioPciDevice>();
    }
}
