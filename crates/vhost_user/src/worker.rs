//! The data path of one connection: a thread running the device's queues when a ring is
//! kicked, the session wakes it or the device backend's fd (e.g. a NIC's) is ready.
//!
//! It is an `event-manager` subscriber (rust-vmm), as every polling loop of vessel is:
//! each fd is registered with a [`Source`] as its event's data. The rings' kick eventfds
//! come and go at run time from the thread reading the socket (SET_VRING_KICK), so they
//! stay in the session's kick set, a plain epoll that thread adds them to; the worker
//! watches the kick set's own fd and, when it is readable, takes the kicks from it.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{
    EventManager, EventOps, Events, MutEventSubscriber, SubscriberId, SubscriberOps,
};
use vmm_sys_util::epoll::{Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::handler::lock;
use crate::session::{Core, SessionError, WorkerFds, MAX_QUEUES};

/// How often rings without a kick fd (VHOST_USER_VRING_NOFD_MASK) are polled.
const POLL_INTERVAL_MS: i32 = 1;

/// What a ready fd of the worker is (its event's data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The worker is told to stop.
    Stop = 0,
    /// The session wants some ring run soon (its pending mask says which).
    Wake = 1,
    /// The device backend is ready (input, or room to send): every ring may move.
    Backend = 2,
    /// Some ring's kick eventfd is readable (tokens in the kick set say which).
    Kicks = 3,
}

impl Source {
    fn decode(data: u32) -> Option<Self> {
        [Self::Stop, Self::Wake, Self::Backend, Self::Kicks]
            .into_iter()
            .find(|s| *s as u32 == data)
    }
}

/// The subscriber: the session's core and the fds that wake the worker.
struct DataPath {
    core: Arc<Mutex<Core>>,
    kicks: Arc<Epoll>,
    wake: Arc<EventFd>,
    sources: Vec<(RawFd, Source, EventSet)>,
    /// Scratch for the kick set's ready events: one per queue at most.
    ready: Vec<EpollEvent>,
    stopped: bool,
    /// The fds `init` registers, and the first that failed.
    registrations: eventloop::Registrations,
}

impl DataPath {
    fn new(core: Arc<Mutex<Core>>, fds: WorkerFds, stop: RawFd) -> Self {
        let mut sources = vec![
            (stop, Source::Stop, EventSet::IN),
            (fds.wake.as_raw_fd(), Source::Wake, EventSet::IN),
            (fds.kicks.as_raw_fd(), Source::Kicks, EventSet::IN),
        ];
        if let Some(fd) = fds.backend {
            // Edge-triggered: the device drains what it can and asks to be run again
            // when it stops early (see crates/vmm/src/io_thread.rs).
            let events = EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED;
            sources.push((fd, Source::Backend, events));
        }
        Self {
            core,
            kicks: fds.kicks,
            wake: fds.wake,
            sources,
            ready: vec![EpollEvent::default(); MAX_QUEUES],
            stopped: false,
            registrations: Default::default(),
        }
    }

    /// Take every pending kick from the kick set (level-triggered: a kick left behind
    /// makes it readable again).
    fn take_kicks(&mut self) {
        let n = match self.kicks.wait(0, &mut self.ready) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("vhost-user worker: reading the kick set: {e}");
                return;
            }
        };
        let mut core = lock(&self.core);
        for ev in &self.ready[..n] {
            core.kicked(ev.data());
        }
    }
}

impl eventloop::Registered for DataPath {
    fn registrations(&mut self) -> &mut eventloop::Registrations {
        &mut self.registrations
    }
}

impl MutEventSubscriber for DataPath {
    fn init(&mut self, ops: &mut EventOps) {
        for &(fd, source, events) in &self.sources {
            self.registrations.add(ops, fd, source as u32, events);
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match Source::decode(events.data()) {
            Some(Source::Stop) => self.stopped = true,
            Some(Source::Wake) => {
                let _ = self.wake.read();
            }
            Some(Source::Backend) => lock(&self.core).backend_ready(),
            Some(Source::Kicks) => self.take_kicks(),
            None => {}
        }
    }
}

/// The running worker thread; dropping it stops and joins it.
pub(crate) struct Worker {
    stop: EventFd,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Start the worker of `core`'s current session. Its epoll is made here, before the
    /// thread confines itself.
    pub fn spawn(core: Arc<Mutex<Core>>) -> std::io::Result<Self> {
        let fds = lock(&core)
            .worker_fds()
            .ok_or_else(|| std::io::Error::other(SessionError::NoSession))?;
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let (manager, id) = eventloop::start(DataPath::new(core.clone(), fds, stop.as_raw_fd()))?;
        let handle = std::thread::Builder::new()
            .name("vhost-user".into())
            .spawn(move || {
                if let Err(e) = confine::enter(confine::Role::VhostUserWorker) {
                    eprintln!("vessel: error: confining the vhost-user worker: {e}");
                    std::process::exit(1);
                }
                serve(&core, manager, id)
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// How long to wait for an event: not at all while a ring has work left, a poll
/// interval while a ring has no kick fd, else until something happens.
fn timeout(core: &Core) -> i32 {
    if core.has_pending() {
        0
    } else if core.has_polled() {
        POLL_INTERVAL_MS
    } else {
        -1
    }
}

fn serve(core: &Mutex<Core>, mut manager: EventManager<DataPath>, id: SubscriberId) {
    loop {
        let timeout = timeout(&lock(core));
        // An interrupted wait dispatches nothing: the rings are looked at again anyway.
        if let Err(e) = manager.run_with_timeout(timeout) {
            tracing::error!("vhost-user worker: epoll_wait: {e}");
            return;
        }
        if manager.subscriber_mut(id).map_or(true, |s| s.stopped) {
            return;
        }
        lock(core).run_pending();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_survives_its_packing() {
        for source in [Source::Stop, Source::Wake, Source::Backend, Source::Kicks] {
            assert_eq!(Source::decode(source as u32), Some(source));
        }
        assert_eq!(Source::decode(4), None);
    }
}
