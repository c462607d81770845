//! A device whose queues another process serves (vhost-user): at DRIVER_OK the transport
//! hands each queue over with its notify eventfd and the right call eventfd (the MSI-X
//! vector's irqfd, or the relay the I/O thread turns into INTx), runs none of them itself,
//! and resets the device on a driver reset.

mod harness;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use harness::{Driver, Setup};
use virtio::external::{ExternalQueue, QueueServer, QueueServerError};
use virtio::queue::QueueLayout;
use virtio::{status, Queue, QueueError, VirtioDevice};
use vm_memory::GuestMemoryMmap;

#[derive(Default)]
struct Log {
    /// (index, layout, kick fd, call fd) per start.
    started: Vec<(usize, QueueLayout, RawFd, RawFd)>,
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
