//! The device I/O thread: waits on every virtqueue's notification eventfd (the
//! ioeventfds KVM signals when the guest kicks) and runs that queue, off the vCPU threads;
//! and on the fds of device backends (a NIC's), whose readiness runs all of the device's
//! queues (frames arrived, or room to send again); and, for devices whose queues another
//! process serves (virtio-fs), on their call relays (interrupts without an MSI-X irqfd).
//!
//! It is an `event-manager` subscriber (rust-vmm), as every polling loop of the VMM is:
//! each fd is registered with a [`Source`] packed into its event's data.

use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use virtio::QueueProcessor;

/// What a ready fd of the I/O thread is. Packed in an event's 32-bit data: the kind in
/// the top two bits, the device index in the next 14, the queue in the low 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The thread is told to stop.
    Stop,
    /// The guest kicked `queue` of `device`.
    Queue { device: usize, queue: usize },
    /// The process serving `queue` of `device` interrupts (virtio-fs without an irqfd).
    Relay { device: usize, queue: usize },
    /// A backend of `device` is ready (input, or room to send).
    Backend { device: usize },
}

const KIND_SHIFT: u32 = 30;
const DEVICE_MASK: u32 = (1 << 14) - 1;

impl Source {
    fn encode(self) -> u32 {
        let pack = |kind: u32, device: usize, queue: usize| {
            (kind << KIND_SHIFT) | ((device as u32 & DEVICE_MASK) << 16) | (queue as u32 & 0xffff)
        };
        match self {
            Source::Stop => pack(0, 0, 0),
            Source::Queue { device, queue } => pack(1, device, queue),
            Source::Relay { device, queue } => pack(2, device, queue),
            Source::Backend { device } => pack(3, device, 0),
        }
    }

    fn decode(data: u32) -> Self {
        let device = ((data >> 16) & DEVICE_MASK) as usize;
        let queue = (data & 0xffff) as usize;
        match data >> KIND_SHIFT {
            0 => Source::Stop,
            1 => Source::Queue { device, queue },
            2 => Source::Relay { device, queue },
            _ => Source::Backend { device },
        }
    }
}

/// The subscriber: the devices' queue processors and the fds that wake them.
struct QueueServer {
    processors: Vec<QueueProcessor>,
    sources: Vec<(RawFd, Source, EventSet)>,
    stopped: bool,
    /// The fds `init` registers, and the first that failed.
    registrations: eventloop::Registrations,
}

impl QueueServer {
    fn new(processors: Vec<QueueProcessor>, backend_fds: Vec<(RawFd, usize)>, stop: RawFd) -> Self {
        let mut sources = vec![(stop, Source::Stop, EventSet::IN)];
        for (device, p) in processors.iter().enumerate() {
            let external = p.is_external();
            for queue in 0..p.num_queues() {
                let (fd, source) = if external {
                    (p.call_relay(queue), Source::Relay { device, queue })
                } else {
                    (p.notifier(queue), Source::Queue { device, queue })
                };
                if let Some(fd) = fd {
                    sources.push((fd.as_raw_fd(), source, EventSet::IN));
                }
            }
        }
        // Edge-triggered: the device drains what it can and re-kicks its queue when it
        // stops early, so only new readiness needs a wake-up (no busy loop on EPOLLOUT).
        let backend = EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED;
        for (fd, device) in backend_fds {
            sources.push((fd, Source::Backend { device }, backend));
        }
        Self {
            processors,
            sources,
            stopped: false,
            registrations: Default::default(),
        }
    }
}

impl eventloop::Registered for QueueServer {
    fn registrations(&mut self) -> &mut eventloop::Registrations {
        &mut self.registrations
    }
}

impl MutEventSubscriber for QueueServer {
    fn init(&mut self, ops: &mut EventOps) {
        for &(fd, source, events) in &self.sources {
            self.registrations.add(ops, fd, source.encode(), events);
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match Source::decode(events.data()) {
            Source::Stop => self.stopped = true,
            Source::Backend { device } => {
                if let Some(p) = self.processors.get(device) {
                    for q in 0..p.num_queues() {
                        if let Err(e) = p.process_queue(q) {
                            tracing::warn!("virtio device {device} queue {q}: {e}");
                        }
                    }
                }
            }
            Source::Relay { device, queue } => {
                if let Some(p) = self.processors.get(device) {
                    let _ = p.relay_call(queue);
                }
            }
            Source::Queue { device, queue } => {
                if let Some(p) = self.processors.get(device) {
                    // A broken ring has already flagged DEVICE_NEEDS_RESET for the guest.
                    if let Err(e) = p.handle_notify(queue) {
                        tracing::warn!("virtio device {device} queue {queue}: {e}");
                    }
                }
            }
        }
    }
}

pub struct IoThread {
    stop: EventFd,
    handle: Option<JoinHandle<()>>,
}

impl IoThread {
    /// Start serving `processors` (one per virtio device), confined as `role`.
    pub fn spawn(
        processors: Vec<QueueProcessor>,
        backend_fds: Vec<(RawFd, usize)>,
        role: confine::Role,
    ) -> std::io::Result<Self> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let (manager, id) =
            eventloop::start(QueueServer::new(processors, backend_fds, stop.as_raw_fd()))?;
        let handle = std::thread::Builder::new()
            .name("io".into())
            .spawn(move || {
                crate::confinement::enter(role);
                serve(manager, id)
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

fn serve(mut manager: EventManager<QueueServer>, id: event_manager::SubscriberId) {
    loop {
        match manager.run() {
            Ok(_) => {}
            Err(event_manager::Error::Epoll(e)) if e.errno() == libc::EINTR => {}
            Err(e) => {
                tracing::error!("I/O thread: {e}");
                return;
            }
        }
        if manager.subscriber_mut(id).map_or(true, |s| s.stopped) {
            return;
        }
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_survives_its_packing() {
        for source in [
            Source::Stop,
            Source::Queue {
                device: 0,
                queue: 0,
            },
            Source::Queue {
                device: 31,
                queue: 0xffff,
            },
            Source::Relay {
                device: 7,
                queue: 3,
            },
            Source::Backend {
                device: DEVICE_MASK as usize,
            },
        ] {
            assert_eq!(Source::decode(source.encode()), source);
        }
    }
}
