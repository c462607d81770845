//! The one event-loop idiom of vessel's polling threads (the VMM's main loop and device
//! I/O thread, the vhost-user worker and socket waits, the network relay): a rust-vmm
//! `event-manager` running a single subscriber, which registers its fds in `init` with a
//! small tag as each event's data. `event-manager` calls `init` without a way to fail, so
//! a subscriber keeps its [`Registrations`], and [`start`] returns the first fd that could
//! not be registered as the error, before the thread that runs the loop is spawned.

use std::io;
use std::os::fd::RawFd;

use event_manager::{
    EventManager, EventOps, Events, MutEventSubscriber, SubscriberId, SubscriberOps,
};
use vmm_sys_util::epoll::EventSet;

/// The outcome of a subscriber's registrations: the first that failed, if any.
#[derive(Debug, Default)]
pub struct Registrations {
    first_error: Option<event_manager::Error>,
}

impl Registrations {
    /// Watches `fd` for `events`, tagged `data`; a failure is kept for [`start`].
    pub fn add(&mut self, ops: &mut EventOps, fd: RawFd, data: u32, events: EventSet) {
        if let Err(e) = ops.add(Events::with_data_raw(fd, data, events)) {
            self.first_error.get_or_insert(e);
        }
    }

    /// The first registration that failed, taken.
    pub fn take_error(&mut self) -> Option<event_manager::Error> {
        self.first_error.take()
    }
}

/// A subscriber that registers its fds through [`Registrations`].
pub trait Registered: MutEventSubscriber {
    fn registrations(&mut self) -> &mut Registrations;
}

/// An event manager running `subscriber` alone, all its fds registered.
pub fn start<S: Registered>(subscriber: S) -> io::Result<(EventManager<S>, SubscriberId)> {
    let mut manager = EventManager::<S>::new().map_err(io_error)?;
    let id = manager.add_subscriber(subscriber);
    let registered = manager.subscriber_mut(id).map_err(io_error)?;
    if let Some(e) = registered.registrations().take_error() {
        return Err(io_error(e));
    }
    Ok((manager, id))
}

/// `e` as an I/O error (an epoll failure keeps its errno).
pub fn io_error(e: event_manager::Error) -> io::Error {
    match e {
        event_manager::Error::Epoll(e) => io::Error::from_raw_os_error(e.errno()),
        e => io::Error::other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use vmm_sys_util::eventfd::EventFd;

    struct Watch {
        fds: Vec<RawFd>,
        seen: Vec<u32>,
        registrations: Registrations,
    }

    impl MutEventSubscriber for Watch {
        fn init(&mut self, ops: &mut EventOps) {
            for (i, &fd) in self.fds.iter().enumerate() {
                self.registrations.add(ops, fd, i as u32, EventSet::IN);
            }
        }

        fn process(&mut self, events: Events, _ops: &mut EventOps) {
            self.seen.push(events.data());
        }
    }

    impl Registered for Watch {
        fn registrations(&mut self) -> &mut Registrations {
            &mut self.registrations
        }
    }

    fn watch(fds: Vec<RawFd>) -> Watch {
        Watch {
            fds,
            seen: Vec::new(),
            registrations: Registrations::default(),
        }
    }

    #[test]
    fn events_arrive_with_their_tag() {
        let (a, b) = (EventFd::new(0).unwrap(), EventFd::new(0).unwrap());
        let (mut manager, id) = start(watch(vec![a.as_raw_fd(), b.as_raw_fd()])).unwrap();
        b.write(1).unwrap();
        assert_eq!(manager.run_with_timeout(1000).unwrap(), 1);
        assert_eq!(manager.subscriber_mut(id).unwrap().seen, vec![1]);
    }

    #[test]
    fn an_fd_that_cannot_be_watched_fails_the_start() {
        let a = EventFd::new(0).unwrap();
        // The same fd twice: epoll refuses the second (EEXIST).
        let Err(err) = start(watch(vec![a.as_raw_fd(), a.as_raw_fd()])) else {
            panic!("the second registration of one fd succeeded");
        };
        assert!(!err.to_string().is_empty());
    }
}
