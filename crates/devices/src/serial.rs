//! 8250/16550 UART (vm-superio) at COM1, with its interrupt on an eventfd (a KVM irqfd for
//! IRQ 4) and host input queued so none is lost when the guest's FIFO is full.

use std::collections::VecDeque;
use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial as Uart, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

mod persist;
pub use persist::{SerialArgs, SerialState, SERIAL_STATE_VERSION, UART_FIFO_LEN};

pub const SERIAL_PORT_LEN: u16 = 8;

/// Raises the UART's interrupt by signalling an eventfd.
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    pub fn new(fd: EventFd) -> Self {
        Self(fd)
    }
}

impl Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Host input waiting for room in the guest's receive FIFO is capped at this many bytes;
/// the VMM stops reading its input source while the queue is this full.
pub const INPUT_QUEUE_LIMIT: usize = 64 * 1024;

pub struct Serial {
    uart: Uart<EventFdTrigger, NoEvents, Box<dyn Write + Send>>,
    pending_input: VecDeque<u8>,
}

impl Serial {
    pub fn new(interrupt: EventFd, output: Box<dyn Write + Send>) -> Self {
        Self {
            uart: Uart::new(EventFdTrigger::new(interrupt), output),
            pending_input: VecDeque::new(),
        }
    }

    /// Queue host input for the guest; moves as much as fits into the FIFO now.
    pub fn queue_input(&mut self, bytes: &[u8]) {
        self.pending_input.extend(bytes);
        self.fill_fifo();
    }

    /// Whether more host input may be queued.
    pub fn wants_input(&self) -> bool {
        self.pending_input.len() < INPUT_QUEUE_LIMIT
    }

    fn fill_fifo(&mut self) {
        while !self.pending_input.is_empty() && self.uart.fifo_capacity() > 0 {
            let (front, _) = self.pending_input.as_slices();
            let n = front.len().min(self.uart.fifo_capacity());
            // In loopback mode the UART drops input; keep it queued instead.
            match self.uart.enqueue_raw_bytes(&front[..n]) {
                Ok(0) | Err(_) => break,
                Ok(done) => {
                    self.pending_input.drain(..done);
                }
            }
        }
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(b), Ok(reg)) = (data.first_mut(), u8::try_from(offset)) {
            *b = self.uart.read(reg);
        }
        if offset == 0 {
            self.fill_fifo();
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&b), Ok(reg)) = (data.first(), u8::try_from(offset)) {
            // Output errors (closed stdout, full disk) must not stop the guest.
            let _ = self.uart.write(reg, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_reaches_the_writer_and_thre_is_reported() {
        let out = Capture::default();
        let mut s = Serial::new(EventFd::new(0).unwrap(), Box::new(out.clone()));
        let mut lsr = [0u8];
        s.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "THR empty");
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn input_beyond_the_fifo_is_kept_until_read() {
        let mut s = Serial::new(EventFd::new(0).unwrap(), Box::new(std::io::sink()));
        let input: Vec<u8> = (0..200u8).collect();
        s.queue_input(&input);
        let mut got = Vec::new();
        for _ in 0..300 {
            let mut lsr = [0u8];
            s.read(5, &mut lsr);
            if lsr[0] & 1 == 0 {
                break;
            }
            let mut b = [0u8];
            s.read(0, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, input);
        assert!(s.wants_input());
    }
}
