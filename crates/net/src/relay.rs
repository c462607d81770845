//! Moves frames between two backends on a thread of its own: the NIC side of a test
//! namespace's tap and a vessel backend, or a switch port and a NAT. Never blocks on a
//! full side: a refused frame is held, its source is not read until the destination
//! turns writable, and the other direction keeps flowing (both peers may be waiting for
//! each other to read).
//!
//! The thread is an `event-manager` subscriber (rust-vmm), as every polling loop of
//! vessel is: a side's fd is watched for room only while a frame for it is held.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use event_manager::{
    Error as EmError, EventManager, EventOps, Events, MutEventSubscriber, SubscriberId,
    SubscriberOps,
};
use virtio::net::MAX_FRAME_LEN;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::Backend;

/// Frames moved per direction before looking at the other one.
const BURST: usize = 64;

/// Frames moved each way and frames dropped.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub a_to_b: AtomicU64,
    pub b_to_a: AtomicU64,
    pub dropped: AtomicU64,
}

/// A running relay; dropping it stops the thread.
pub struct Relay {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<RelayStats>,
}

/// One direction: frames from `from` to `to`, with the frame `to` refused last.
struct Direction {
    buf: Vec<u8>,
    held: Option<usize>,
    /// `from` may hold frames its fd does not report.
    more: bool,
}

impl Direction {
    fn new() -> Self {
        Self {
            buf: vec![0u8; MAX_FRAME_LEN],
            held: None,
            more: false,
        }
    }

    /// Move frames until `from` is empty, `to` is full, or a burst is done.
    fn pump(
        &mut self,
        from: &mut dyn Backend,
        to: &mut dyn Backend,
        moved: &AtomicU64,
        dropped: &AtomicU64,
    ) {
        self.more = false;
        for _ in 0..BURST {
            let len = match self.held.take() {
                Some(len) => len,
                None => match from.recv(&mut self.buf) {
                    Ok(Some(len)) => len,
                    Ok(None) | Err(_) => return,
                },
            };
            match to.send(&self.buf[..len]) {
                Ok(true) => {
                    moved.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {
                    self.held = Some(len);
                    return;
                }
                Err(_) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.more = true;
    }

    /// Events to wait for: input on the source unless a frame is held, room on the
    /// destination when one is (a destination whose fd is a poll set, as `natnet`'s,
    /// reports room as input).
    fn wants(&self) -> (EventSet, EventSet) {
        if self.held.is_some() {
            (EventSet::empty(), EventSet::OUT | EventSet::IN)
        } else {
            (EventSet::IN, EventSet::empty())
        }
    }
}

/// What a ready fd of the relay is (its event's data).
const SIDE_A: u32 = 0;
const SIDE_B: u32 = 1;
const STOP: u32 = 2;

/// Without a burst left over, the relay wakes up once a second anyway.
const IDLE_TIMEOUT_MS: i32 = 1000;
/// A peer that hung up is not polled more than ten times a second.
const HANG_UP_BACK_OFF_MS: i32 = 100;

/// The subscriber: both backends, both directions, and what each side's fd reported.
struct Pump {
    a: Box<dyn Backend>,
    b: Box<dyn Backend>,
    ab: Direction,
    ba: Direction,
    stats: Arc<RelayStats>,
    stop: RawFd,
    /// What the fds of `a` and `b` are watched for.
    interest: [EventSet; 2],
    /// What they reported since the last [`Pump::step`].
    ready: [EventSet; 2],
    stopped: bool,
    /// The fds `init` registers, and the first that failed.
    registrations: eventloop::Registrations,
}

impl Pump {
    fn new(a: Box<dyn Backend>, b: Box<dyn Backend>, stop: RawFd, stats: Arc<RelayStats>) -> Self {
        let mut pump = Self {
            a,
            b,
            ab: Direction::new(),
            ba: Direction::new(),
            stats,
            stop,
            interest: [EventSet::empty(); 2],
            ready: [EventSet::empty(); 2],
            stopped: false,
            registrations: Default::default(),
        };
        pump.interest = pump.wanted();
        pump
    }

    /// What the fds of `a` and `b` must be watched for now.
    fn wanted(&self) -> [EventSet; 2] {
        let (a_in, b_out) = self.ab.wants();
        let (b_in, a_out) = self.ba.wants();
        [a_in | a_out, b_in | b_out]
    }

    /// The registrations of both sides' fds, as they stand.
    fn sides(&self) -> [Events; 2] {
        [
            Events::with_data_raw(self.a.as_raw_fd(), SIDE_A, self.interest[0]),
            Events::with_data_raw(self.b.as_raw_fd(), SIDE_B, self.interest[1]),
        ]
    }

    /// How long to wait: not at all while a burst left frames behind.
    fn timeout(&self) -> i32 {
        if self.ab.more || self.ba.more {
            0
        } else {
            IDLE_TIMEOUT_MS
        }
    }

    /// Move frames the way the last wait allows; returns whether a peer hung up.
    fn step(&mut self) -> bool {
        let [ra, rb] = std::mem::replace(&mut self.ready, [EventSet::empty(); 2]);
        let (a_in, b_out) = self.ab.wants();
        let (b_in, a_out) = self.ba.wants();
        if ra.contains(EventSet::OUT) {
            let _ = self.a.flush();
        }
        if rb.contains(EventSet::OUT) {
            let _ = self.b.flush();
        }
        let broken = EventSet::HANG_UP | EventSet::ERROR;
        let ready = |r: EventSet, ev: EventSet| r.intersects(ev | broken);
        let s = &*self.stats;
        if self.ab.more || ready(ra, a_in) || ready(rb, b_out) {
            self.ab
                .pump(&mut *self.a, &mut *self.b, &s.a_to_b, &s.dropped);
        }
        if self.ba.more || ready(rb, b_in) || ready(ra, a_out) {
            self.ba
                .pump(&mut *self.b, &mut *self.a, &s.b_to_a, &s.dropped);
        }
        (ra | rb).intersects(broken)
    }

    /// The registrations to modify since a frame was held or let go.
    fn interest_changes(&mut self) -> Vec<Events> {
        let wanted = self.wanted();
        let before = self.sides();
        self.interest = wanted;
        let after = self.sides();
        (0..2)
            .filter(|&i| before[i] != after[i])
            .map(|i| after[i])
            .collect()
    }
}

impl eventloop::Registered for Pump {
    fn registrations(&mut self) -> &mut eventloop::Registrations {
        &mut self.registrations
    }
}

impl MutEventSubscriber for Pump {
    fn init(&mut self, ops: &mut EventOps) {
        let stop = Events::with_data_raw(self.stop, STOP, EventSet::IN);
        for events in self.sides().into_iter().chain([stop]) {
            self.registrations
                .add(ops, events.fd(), events.data(), events.event_set());
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            SIDE_A => self.ready[0] |= events.event_set(),
            SIDE_B => self.ready[1] |= events.event_set(),
            STOP => self.stopped = true,
            _ => {}
        }
    }
}

/// Wait out the back-off after a hang-up with only the stop fd watched (a hung-up fd is
/// reported whatever it is watched for). Returns whether the relay is to stop.
fn back_off(manager: &mut EventManager<Pump>, id: SubscriberId) -> Result<bool, EmError> {
    let sides = manager.subscriber_mut(id)?.sides();
    let mut ops = manager.event_ops(id)?;
    for events in sides {
        ops.remove(events)?;
    }
    manager.run_with_timeout(HANG_UP_BACK_OFF_MS)?;
    let mut ops = manager.event_ops(id)?;
    for events in sides {
        ops.add(events)?;
    }
    Ok(manager.subscriber_mut(id)?.stopped)
}

/// One round: wait, move frames, follow the held frames with the interest. Returns
/// whether the relay is to stop.
fn round(manager: &mut EventManager<Pump>, id: SubscriberId) -> Result<bool, EmError> {
    let timeout = manager.subscriber_mut(id)?.timeout();
    // Interrupted by a signal, nothing is reported: bursts left over still move.
    manager.run_with_timeout(timeout)?;
    let pump = manager.subscriber_mut(id)?;
    if pump.stopped {
        return Ok(true);
    }
    let hung_up = pump.step();
    let changes = pump.interest_changes();
    let ops = manager.event_ops(id)?;
    for events in changes {
        ops.modify(events)?;
    }
    if hung_up {
        return back_off(manager, id);
    }
    Ok(false)
}

fn run(mut manager: EventManager<Pump>, id: SubscriberId) {
    loop {
        match round(&mut manager, id) {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => {
                tracing::error!("net relay: {e}");
                return;
            }
        }
    }
}

impl Relay {
    /// Start relaying between `a` and `b` until dropped.
    pub fn start(a: Box<dyn Backend>, b: Box<dyn Backend>) -> io::Result<Self> {
        let stop = EventFd::new(libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)?;
        let stats = Arc::new(RelayStats::default());
        let (manager, id) = eventloop::start(Pump::new(a, b, stop.as_raw_fd(), stats.clone()))?;
        let thread = std::thread::Builder::new()
            .name("vessel-net-relay".into())
            .spawn(move || run(manager, id))?;
        Ok(Self {
            stop,
            thread: Some(thread),
            stats,
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
