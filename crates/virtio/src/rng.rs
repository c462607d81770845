//! virtio-rng (virtio 1.2 §5.4): fills device-writable buffers from the host's getrandom.

use vm_memory::GuestMemoryMmap;

use crate::chain_io::{split, ChainWriter};
use crate::device::VirtioDevice;
use crate::drain::drain;
use crate::queue::{Queue, QueueError, Segment};

/// Queue size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Random bytes given per request at most (the driver asks again for more).
pub const MAX_BYTES_PER_REQUEST: usize = 64 << 10;
const DEVICE_TYPE_RNG: u16 = 4;

/// Fill `buf` from getrandom(2).
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        done += n as usize;
    }
    Ok(())
}

/// An entropy device.
pub struct Rng {
    queue_sizes: [u16; 1],
    buf: Vec<u8>,
    segs: Vec<Segment>,
}

impl Rng {
    pub fn new() -> Self {
        Self {
            queue_sizes: [QUEUE_SIZE],
            buf: vec![0; MAX_BYTES_PER_REQUEST],
            segs: Vec::new(),
        }
    }

    /// Fill one request's writable buffers; a chain with device-readable buffers is
    /// malformed and gets nothing.
    fn serve(buf: &mut [u8], mem: &GuestMemoryMmap, segs: &[Segment]) -> u32 {
        let (readable, writable) = split(segs);
        if !readable.is_empty() {
            return 0;
        }
        let mut writer = ChainWriter::new(mem, writable);
        let n = (writer.remaining() as usize).min(buf.len());
        if getrandom(&mut buf[..n]).is_err() {
            return 0;
        }
        // A failed guest write leaves what was written so far.
        let _ = writer.write_all(&buf[..n]);
        writer.written() as u32
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE_RNG
    }
    fn pci_class(&self) -> (u8, u8) {
        (0xff, 0x00)
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        0
    }
    fn config_len(&self) -> usize {
        0
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn process_queue(
        &mut self,
        _index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        let buf = &mut self.buf;
        drain(queue, mem, &mut self.segs, |mem, chain| {
            chain.map_or(0, |segs| Self::serve(buf, mem, segs))
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn getrandom_fills() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        super::getrandom(&mut a).unwrap();
        super::getrandom(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
