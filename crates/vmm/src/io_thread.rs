//! The device I/O thread: waits on every virtqueue's notification eventfd (the
//! ioeventfds KVM signals when the guest kicks) and runs that queue, off the vCPU threads;
//! and on the fds of device backends (a NIC's), whose readiness runs all of the device's
//! queues (frames arrived, or room to send again); and, for devices whose queues another
//! process serves (virtio-fs), on their call relays (interrupts without an MSI-X irqfd).

use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use virtio::QueueProcessor;

/// Token of the stop eventfd; queue tokens are `(device << 16) | queue`; backend tokens
/// have BACKEND_TOKEN set and the device index below.
const STOP_TOKEN: u64 = u64::MAX;
const BACKEND_TOKEN: u64 = 1 << 40;
/// Set on the tokens of the call relays of devices another process serves (virtio-fs):
/// their kicks are that process's, only its interrupts without an irqfd come here.
const RELAY_TOKEN: u64 = 1 << 41;

pub struct IoThread {
    stop: EventFd,
    handle: Option<JoinHandle<()>>,
}

impl IoThread {
    /// Start serving `processors` (one per virtio device), confined as `role`.
    pub fn spawn(
        processors: Vec<QueueProcessor>,
        backend_fds: Vec<(std::os::fd::RawFd, usize)>,
        role: confine::Role,
    ) -> std::io::Result<Self> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP_TOKEN),
        )?;
        for (d, p) in processors.iter().enumerate() {
            let external = p.is_external();
            for q in 0..p.num_queues() {
                let fd = if external {
                    p.call_relay(q)
                } else {
                    p.notifier(q)
                };
                if let Some(fd) = fd {
                    let relay = if external { RELAY_TOKEN } else { 0 };
                    let token = relay | ((d as u64) << 16) | q as u64;
                    epoll.ctl(
                        ControlOperation::Add,
                        fd.as_raw_fd(),
                        EpollEvent::new(EventSet::IN, token),
                    )?;
                }
            }
        }
        for (fd, device) in backend_fds {
            // Edge-triggered: the device drains what it can and re-kicks its queue when it
            // stops early, so only new readiness needs a wake-up (no busy loop on EPOLLOUT).
            let events = EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED;
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(events, BACKEND_TOKEN | device as u64),
            )?;
        }
        let handle = std::thread::Builder::new()
            .name("io".into())
            .spawn(move || {
                crate::confinement::enter(role);
                serve(epoll, processors)
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

fn serve(epoll: Epoll, processors: Vec<QueueProcessor>) {
    let mut events = vec![EpollEvent::default(); 64];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("I/O thread: epoll_wait: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == STOP_TOKEN {
                return;
            }
            if token & BACKEND_TOKEN != 0 {
                if let Some(p) = processors.get((token & !BACKEND_TOKEN) as usize) {
                    for q in 0..p.num_queues() {
                        if let Err(e) = p.process_queue(q) {
                            tracing::warn!("virtio device queue {q}: {e}");
                        }
                    }
                }
                continue;
            }
            let (device, queue) = (
                ((token & !RELAY_TOKEN) >> 16) as usize,
                (token & 0xffff) as usize,
            );
            if token & RELAY_TOKEN != 0 {
                if let Some(p) = processors.get(device) {
                    let _ = p.relay_call(queue);
                }
                continue;
            }
            if let Some(p) = processors.get(device) {
                // A broken ring has already flagged DEVICE_NEEDS_RESET for the guest.
                if let Err(e) = p.handle_notify(queue) {
                    tracing::warn!("virtio device {device} queue {queue}: {e}");
                }
            }
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
