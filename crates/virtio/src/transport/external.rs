//! DRIVER_OK of a device whose queues another process serves ([`crate::external`]): the
//! transport hands over each enabled queue with its notify eventfd and the eventfd that
//! interrupts the driver for it.

use vmm_sys_util::eventfd::EventFd;

use super::{VirtioPciDevice, NO_VECTOR};
use crate::external::ExternalQueue;
use crate::processor::lock;
use crate::queue::QueueLayout;

impl VirtioPciDevice {
    /// Hand the enabled queues to the device's server. A refusal (the server is gone, a
    /// ring lies outside guest memory) sets DEVICE_NEEDS_RESET.
    pub(super) fn start_external(&mut self) {
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
            queues.push(ExternalQueue {
                index,
                layout: QueueLayout {
                    size: regs.size,
                    desc: regs.desc,
                    avail: regs.driver,
                    used: regs.device,
                },
                kick,
                // INTx or no vector: the I/O thread relays (QueueProcessor::relay_call).
                call: irqfd.unwrap_or(relay),
            });
        }
        let started = lock(&shared.device)
            .queue_server()
            .map(|server| server.start(self.driver_features, &shared.mem, &queues));
        if let Some(Err(e)) = started {
            tracing::error!("{e}; the device needs a reset");
            shared.fail();
        }
    }
}
