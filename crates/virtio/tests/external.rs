//! A device whose queues another process serves (vhost-user): at DRIVER_OK the transport
//! hands each queue over with its notify eventfd and the right call eventfd (the MSI-X
//! vector's irqfd, or the relay the I/O thread turns into INTx), runs none of them itself,
//! and resets the device on a driver reset. A snapshot pauses the server (its ring
//! indices become the saved ones) and starts it again where it stopped; a restored device
//! starts its server at the saved indices once the VM runs; servers started again are
//! kicked and interrupt their drivers once.

mod harness;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use harness::{Driver, Setup};
use virtio::external::{ExternalQueue, PauseError, QueueServer, QueueServerError};
use virtio::queue::QueueLayout;
use virtio::{status, Queue, QueueError, VirtioDevice};
use vm_memory::GuestMemoryMmap;

#[derive(Default)]
struct Log {
    /// (index, layout, kick fd, call fd) per start.
    started: Vec<(usize, QueueLayout, RawFd, RawFd)>,
    /// The next available index of each started queue.
    next_avail: Vec<u16>,
    pauses: usize,
    /// Make the next pauses fail after stopping queue 0.
    fail_pause: bool,
    resets: usize,
    processed: usize,
}

struct Served {
    log: Arc<Mutex<Log>>,
    refuse: bool,
}

impl VirtioDevice for Served {
    fn device_type(&self) -> u16 {
        26
    }
    fn pci_class(&self) -> (u8, u8) {
        (0x01, 0x80)
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[64, 64]
    }
    fn features(&self) -> u64 {
        // Served devices offer the whole set themselves (no transport bits added).
        virtio::features::VERSION_1
    }
    fn config_len(&self) -> usize {
        0
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn queue_server(&mut self) -> Option<&mut dyn QueueServer> {
        Some(self)
    }
    fn reset(&mut self) {
        self.log.lock().unwrap().resets += 1;
    }
    fn process_queue(
        &mut self,
        _index: usize,
        _queue: &mut Queue,
        _mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        self.log.lock().unwrap().processed += 1;
        Ok(false)
    }
}

impl QueueServer for Served {
    fn start(
        &mut self,
        _features: u64,
        _mem: &GuestMemoryMmap,
        queues: &[ExternalQueue<'_>],
    ) -> Result<(), QueueServerError> {
        if self.refuse {
            return Err(QueueServerError("the server is gone".into()));
        }
        let mut log = self.log.lock().unwrap();
        for q in queues {
            log.started
                .push((q.index, q.layout, q.kick.as_raw_fd(), q.call.as_raw_fd()));
            log.next_avail.push(q.next_avail);
        }
        Ok(())
    }

    fn pause(&mut self) -> Result<Vec<(usize, u16)>, PauseError> {
        self.log.lock().unwrap().pauses += 1;
        if self.log.lock().unwrap().fail_pause {
            // Queue 0 stopped, queue 1 not.
            return Err(PauseError {
                stopped: vec![(0, 3)],
                error: QueueServerError("GET_VRING_BASE failed".into()),
            });
        }
        Ok(vec![(0, 5), (1, 9)])
    }

    fn save(&mut self) -> Result<(), QueueServerError> {
        if self.refuse {
            return Err(QueueServerError("cannot save".into()));
        }
        Ok(())
    }
}

fn served(setup: Setup, refuse: bool) -> (Driver, Arc<Mutex<Log>>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let mut d = Driver::plug(Box::new(Served {
        log: log.clone(),
        refuse,
    }));
    d.init(setup);
    (d, log)
}

#[test]
fn with_msix_each_queue_gets_its_vectors_irqfd_and_its_ioeventfd() {
    let (d, log) = served(Setup::default(), false);
    assert!(d.processor.is_external());
    assert_eq!(d.device_features(), virtio::features::VERSION_1);
    let started = log.lock().unwrap().started.clone();
    assert_eq!(started.len(), 2);
    for (q, (index, layout, kick, call)) in started.into_iter().enumerate() {
        assert_eq!(index, q);
        let dq = &d.queues[q];
        assert_eq!(
            (layout.size, layout.desc, layout.avail, layout.used),
            (64, dq.desc, dq.avail, dq.used)
        );
        assert_eq!(kick, d.processor.notifier(q).unwrap().as_raw_fd());
        // The harness's driver gives queue q vector q + 1.
        assert_eq!(call, d.msi.irqfds[q + 1].as_raw_fd());
    }
    // Kicks are the server's: the VMM never runs the queues.
    d.processor.process_queue(0).unwrap();
    assert_eq!(log.lock().unwrap().processed, 0);
    let resets = log.lock().unwrap().resets;
    d.set_status(0);
    assert_eq!(log.lock().unwrap().resets, resets + 1);
}

#[test]
fn without_msix_the_server_signals_a_relay_that_raises_intx() {
    let setup = Setup {
        msix: false,
        ..Setup::default()
    };
    let (d, log) = served(setup, false);
    let started = log.lock().unwrap().started.clone();
    assert_eq!(started.len(), 2);
    let relay = d.processor.call_relay(1).unwrap();
    assert_eq!(started[1].3, relay.as_raw_fd());
    assert!(!d.intx.asserted());
    relay.write(1).unwrap();
    d.processor.relay_call(1).unwrap();
    assert!(d.intx.asserted());
    assert_eq!(d.read_isr() & 1, 1);
    assert!(!d.intx.asserted());
    // Nothing signalled: no interrupt.
    d.processor.relay_call(1).unwrap();
    assert!(!d.intx.asserted());
}

#[test]
fn a_server_that_refuses_the_queues_makes_the_device_need_a_reset() {
    let (d, log) = served(Setup::default(), true);
    assert!(log.lock().unwrap().started.is_empty());
    assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn a_snapshot_pauses_the_server_and_saves_its_ring_indices() {
    let (d, log) = served(Setup::default(), false);
    assert_eq!(log.lock().unwrap().next_avail, [0, 0]);
    d.dev.lock().unwrap().pause_external().unwrap();
    let state = d.dev.lock().unwrap().with_frozen_state(|s| s);
    let saved: Vec<u16> = state.queues.iter().map(|q| q.next_avail).collect();
    assert_eq!(saved, [5, 9]);
    // Nothing pending before the server gets its queues back (DRIVER_OK's kicks taken).
    for q in 0..2 {
        signalled(d.processor.notifier(q).unwrap());
        assert!(!signalled(&d.msi.irqfds[q + 1]));
    }
    d.dev.lock().unwrap().resume_external();
    {
        let log = log.lock().unwrap();
        assert_eq!(log.pauses, 1);
        assert_eq!(
            log.next_avail,
            [0, 0, 5, 9],
            "started again where it stopped"
        );
    }
    // Each queue kicked and its driver interrupted once (an interrupt a snapshot missed).
    for q in 0..2 {
        assert!(signalled(d.processor.notifier(q).unwrap()));
        assert!(signalled(&d.msi.irqfds[q + 1]));
    }
    // Resumed once only.
    d.dev.lock().unwrap().resume_external();
    assert_eq!(log.lock().unwrap().next_avail.len(), 4);

    // Restored into a new function: the server starts at the saved indices, not while the
    // VM is built but when its vCPUs run (resume_external).
    let new_log = Arc::new(Mutex::new(Log::default()));
    let new = Driver::plug(Box::new(Served {
        log: new_log.clone(),
        refuse: false,
    }));
    new.dev.lock().unwrap().restore_registers(&state).unwrap();
    assert!(new_log.lock().unwrap().started.is_empty());
    assert!(!signalled(new.processor.notifier(0).unwrap()));
    new.dev.lock().unwrap().resume_external();
    assert_eq!(new_log.lock().unwrap().next_avail, [5, 9]);
    for q in 0..2 {
        assert!(signalled(new.processor.notifier(q).unwrap()));
        assert!(signalled(&new.msi.irqfds[q + 1]));
    }

    // A server that refuses the queues then makes the device need a reset.
    let refusing = Driver::plug(Box::new(Served {
        log: Arc::new(Mutex::new(Log::default())),
        refuse: true,
    }));
    let needs_reset = |d: &Driver| d.dev.lock().unwrap().with_frozen_state(|s| s.needs_reset);
    let restored = refusing.dev.lock().unwrap().restore_registers(&state);
    restored.unwrap();
    assert!(!needs_reset(&refusing));
    refusing.dev.lock().unwrap().resume_external();
    assert!(needs_reset(&refusing));
}

/// Whether `fd` (non-blocking) had been written since last read.
fn signalled(fd: &vmm_sys_util::eventfd::EventFd) -> bool {
    fd.read().is_ok()
}

#[test]
fn a_pause_that_fails_part_way_keeps_the_stopped_queues_index_and_resumes_them() {
    let (d, log) = served(Setup::default(), false);
    log.lock().unwrap().fail_pause = true;
    let err = d.dev.lock().unwrap().pause_external();
    assert!(
        matches!(err, Err(virtio::StateError::External(_))),
        "{err:?}"
    );
    let saved = d.dev.lock().unwrap().with_frozen_state(|s| s);
    assert_eq!(saved.queues[0].next_avail, 3, "the stopped queue's index");
    // The VM goes on: the server gets its queues back (it keeps serving queue 1, which it
    // never stopped; queue 0 starts where it stopped).
    d.dev.lock().unwrap().resume_external();
    assert_eq!(log.lock().unwrap().next_avail, [0, 0, 3, 0]);
}
