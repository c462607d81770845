//! virtio-console through the PCI transport: guest output to a host writer, host input to
//! the guest, terminal size in the configuration.

mod harness;

use std::io::Write;
use std::sync::{Arc, Mutex};

use harness::vring::Buf;
use harness::{Driver, Setup};
use virtio::console::{Console, ConsoleHandle, RX_QUEUE, TX_QUEUE};

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);
impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn console() -> (Driver, ConsoleHandle, Sink) {
    let sink = Sink::default();
    let (dev, handle) = Console::new(Box::new(sink.clone()), 80, 25);
    let mut d = Driver::plug(Box::new(dev));
    let (_, device) = d.probe();
    assert_eq!(device, 0x1043);
    d.init(Setup {
        event_idx: true,
        ..Setup::default()
    });
    (d, handle, sink)
}

#[test]
fn guest_output_reaches_the_host() {
    let (mut d, _, sink) = console();
    let a = d.alloc(6, 0);
    let b = d.alloc(7, 0);
    d.mem_write(a, b"hello ");
    d.mem_write(b, b"world\r\n");
    let head = d.queues[TX_QUEUE].chain(&d.mem, &[Buf::r(a, 6), Buf::r(b, 7)]);
    d.queues[TX_QUEUE].offer(&d.mem, head);
    d.kick(TX_QUEUE as u16);
    assert_eq!(
        d.queues[TX_QUEUE].take_used(&d.mem),
        vec![(u32::from(head), 0)]
    );
    assert_eq!(&*sink.0.lock().unwrap(), b"hello world\r\n");
    // A transmit chain with a writable buffer is malformed and dropped.
    let head = d.queues[TX_QUEUE].chain(&d.mem, &[Buf::r(a, 6), Buf::w(b, 7)]);
    d.queues[TX_QUEUE].offer(&d.mem, head);
    d.kick(TX_QUEUE as u16);
    assert_eq!(sink.0.lock().unwrap().len(), 13);
}

#[test]
fn host_input_reaches_the_guest() {
    let (mut d, handle, _) = console();
    // Linux posts receive buffers up front.
    let bufs: Vec<u64> = (0..2).map(|_| d.alloc(4, 0)).collect();
    for &b in &bufs {
        let head = d.queues[RX_QUEUE].chain(&d.mem, &[Buf::w(b, 4)]);
        d.queues[RX_QUEUE].offer(&d.mem, head);
    }
    d.kick(RX_QUEUE as u16);
    assert!(
        d.queues[RX_QUEUE].take_used(&d.mem).is_empty(),
        "no input yet"
    );
    assert_eq!(handle.push_input(b"ls -l\n"), 6);
    d.processor.process_queue(RX_QUEUE).unwrap();
    let used = d.queues[RX_QUEUE].take_used(&d.mem);
    assert_eq!(used.iter().map(|u| u.1).collect::<Vec<_>>(), vec![4, 2]);
    assert_eq!(d.read_mem(bufs[0], 4), b"ls -");
    assert_eq!(d.read_mem(bufs[1], 2), b"l\n");
    assert_eq!(d.msi.take(), vec![1]);
    // Input without buffers waits in the host buffer until the guest posts one.
    handle.push_input(b"xy");
    d.processor.process_queue(RX_QUEUE).unwrap();
    assert_eq!(handle.pending_input(), 2);
    let b = d.alloc(16, 0);
    let head = d.queues[RX_QUEUE].chain(&d.mem, &[Buf::w(b, 16)]);
    d.queues[RX_QUEUE].offer(&d.mem, head);
    d.kick(RX_QUEUE as u16);
    assert_eq!(
        d.queues[RX_QUEUE].take_used(&d.mem),
        vec![(u32::from(head), 2)]
    );
    assert_eq!(handle.pending_input(), 0);
}

#[test]
fn size_in_config_and_resize_interrupt() {
    let (d, handle, _) = console();
    let mut cfg = [0u8; 8];
    d.device_config(0, &mut cfg);
    assert_eq!(&cfg, &[80, 0, 25, 0, 1, 0, 0, 0]);
    let generation = d.common_read8(0x15);
    handle.set_size(132, 50);
    d.processor.signal_config_change();
    assert_eq!(d.msi.take(), vec![0], "config vector");
    assert_ne!(d.common_read8(0x15), generation);
    d.device_config(0, &mut cfg);
    assert_eq!(&cfg[..4], &[132, 0, 50, 0]);
}

#[test]
fn input_buffer_is_bounded() {
    let (_d, handle, _) = console();
    let big = vec![b'a'; 100 << 10];
    assert_eq!(handle.push_input(&big), 64 << 10);
    assert_eq!(handle.push_input(b"more"), 0);
}
