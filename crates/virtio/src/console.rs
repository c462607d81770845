//! virtio-console (virtio 1.2 §5.3), a single port without multiport: receiveq carries
//! host input to the guest, transmitq guest output to a host writer.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryMmap;

use crate::chain_io::{split, ChainReader, ChainWriter};
use crate::device::VirtioDevice;
use crate::drain::drain;
use crate::processor::lock;
use crate::queue::{Queue, QueueError, Segment};

mod persist;
pub use persist::{ConsoleArgs, ConsoleState, CONSOLE_STATE_VERSION};

/// Queue index of receiveq (host → guest) and transmitq (guest → host).
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
pub const QUEUE_SIZE: u16 = 256;
/// Host input buffered while the guest has no receive buffers; more is refused.
pub const INPUT_CAPACITY: usize = 64 << 10;
/// VIRTIO_CONSOLE_F_SIZE and VIRTIO_CONSOLE_F_EMERG_WRITE.
pub const F_SIZE: u64 = 1 << 0;
pub const F_EMERG_WRITE: u64 = 1 << 2;
const CONFIG_LEN: usize = 12;
pub(crate) const DEVICE_TYPE_CONSOLE: u16 = 3;
const TX_CHUNK: usize = 4096;
/// Output taken from one transmit chain at most; the rest of a larger chain is dropped.
pub const MAX_TX_PER_CHAIN: u64 = 1 << 20;
/// Receive buffers filled per call before yielding.
const RX_BUDGET: u32 = 1024;

struct HostSide {
    input: VecDeque<u8>,
    cols: u16,
    rows: u16,
}

/// The host's end of the console: queue input, change the size. After `push_input` the
/// caller runs `QueueProcessor::process_queue(RX_QUEUE)`; after `set_size`,
/// `QueueProcessor::signal_config_change()`.
#[derive(Clone)]
pub struct ConsoleHandle(Arc<Mutex<HostSide>>);

impl ConsoleHandle {
    /// Queue bytes for the guest; returns how many were accepted (the buffer is bounded).
    pub fn push_input(&self, bytes: &[u8]) -> usize {
        let mut host = lock(&self.0);
        let n = bytes.len().min(INPUT_CAPACITY - host.input.len());
        host.input.extend(&bytes[..n]);
        n
    }

    /// Bytes queued and not yet delivered.
    pub fn pending_input(&self) -> usize {
        lock(&self.0).input.len()
    }

    pub fn set_size(&self, cols: u16, rows: u16) {
        let mut host = lock(&self.0);
        host.cols = cols;
        host.rows = rows;
    }
}

/// A single-port console device.
pub struct Console {
    host: Arc<Mutex<HostSide>>,
    output: Box<dyn Write + Send>,
    queue_sizes: [u16; 2],
    segs: Vec<Segment>,
}

impl Console {
    /// A console writing guest output to `output`, with a `cols`×`rows` terminal.
    pub fn new(output: Box<dyn Write + Send>, cols: u16, rows: u16) -> (Self, ConsoleHandle) {
        let host = Arc::new(Mutex::new(HostSide {
            input: VecDeque::new(),
            cols,
            rows,
        }));
        let console = Self {
            host: host.clone(),
            output,
            queue_sizes: [QUEUE_SIZE; 2],
            segs: Vec::new(),
        };
        (console, ConsoleHandle(host))
    }

    /// Move queued input into the guest's receive buffers, one chain at a time, only
    /// while there is input.
    fn receive(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, QueueError> {
        let mut host = lock(&self.host);
        let mut chunk = Vec::new();
        let mut served = 0;
        loop {
            while !host.input.is_empty() {
                if served == RX_BUDGET {
                    return Ok(true);
                }
                served += 1;
                let Some(head) = queue.pop(mem)? else { break };
                let len = match queue.read_chain(mem, head, &mut self.segs) {
                    Ok(()) => {
                        let (readable, writable) = split(&self.segs);
                        if readable.is_empty() {
                            let mut writer = ChainWriter::new(mem, writable);
                            let n = (writer.remaining() as usize).min(host.input.len());
                            chunk.clear();
                            chunk.extend(host.input.drain(..n));
                            let _ = writer.write_all(&chunk);
                            writer.written() as u32
                        } else {
                            0
                        }
                    }
                    Err(_) => 0,
                };
                queue.add_used(mem, head, len)?;
            }
            // Ask for a kick when buffers arrive; loop if some already did.
            if host.input.is_empty() || !queue.enable_notification(mem)? {
                return Ok(false);
            }
        }
    }

    fn transmit(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, QueueError> {
        let output = &mut self.output;
        let result = drain(queue, mem, &mut self.segs, |mem, chain| {
            let Ok(segs) = chain else { return 0 };
            let (readable, writable) = split(segs);
            if !writable.is_empty() {
                return 0;
            }
            let mut reader = ChainReader::new(mem, readable);
            let mut buf = [0u8; TX_CHUNK];
            let mut left = reader.remaining().min(MAX_TX_PER_CHAIN);
            while left > 0 {
                let n = (left as usize).min(TX_CHUNK);
                left -= n as u64;
                if reader.read_exact(&mut buf[..n]).is_err() {
                    break;
                }
                // A host writer that went away drops the output, as a serial line would.
                let _ = output.write_all(&buf[..n]);
            }
            0
        });
        let _ = self.output.flush();
        result
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE_CONSOLE
    }
    fn pci_class(&self) -> (u8, u8) {
        (0x07, 0x80)
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        F_SIZE | F_EMERG_WRITE
    }
    fn config_len(&self) -> usize {
        CONFIG_LEN
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let host = lock(&self.host);
        let mut config = [0u8; CONFIG_LEN];
        config[0..2].copy_from_slice(&host.cols.to_le_bytes());
        config[2..4].copy_from_slice(&host.rows.to_le_bytes());
        config[4..8].copy_from_slice(&1u32.to_le_bytes());
        data.fill(0);
        let start = offset as usize;
        if let Some(src) = start
            .checked_add(data.len())
            .and_then(|end| config.get(start..end))
        {
            data.copy_from_slice(src);
        }
    }
    fn save_state(&self) -> crate::DeviceState {
        crate::DeviceState::Console(crate::Persist::save(self))
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // emerg_wr: one character written straight to the output.
        if offset == 8 && !data.is_empty() {
            let _ = self.output.write_all(&data[..1]);
            let _ = self.output.flush();
        }
    }
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        match index {
            RX_QUEUE => self.receive(queue, mem),
            TX_QUEUE => self.transmit(queue, mem),
            _ => Ok(false),
        }
    }
}
