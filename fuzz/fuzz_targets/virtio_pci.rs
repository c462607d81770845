//! Fuzz the virtio PCI transport: arbitrary sequences of BAR and configuration-space
//! accesses (any offset, width and value) interleaved with queue processing, for a
//! virtio-blk and a virtio-console function on one root, over guest memory from the input.
//! Nothing may panic or hang.
#![no_main]

#[path = "virtio_disk.rs"]
mod virtio_disk;

use std::sync::{Arc, Mutex};

use devices::bus::BusDevice;
use libfuzzer_sys::fuzz_target;
use pci::{IntxLine, MsiInterrupt, MsiMessage, PciConfigIo, PciConfigMmio, PciRoot};
use virtio::blk::Block;
use virtio::console::Console;
use virtio::{QueueProcessor, VirtioPciDevice, VIRTIO_PCI_BAR_SIZE};
use virtio_disk::FuzzDisk;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 0x10000;
const MEM_SEED: usize = 0x2000;

struct NoIrq;
impl MsiInterrupt for NoIrq {
    fn update(&self, _vector: u16, _msg: MsiMessage, _masked: bool) {}
    fn trigger(&self, _vector: u16) {}
}
impl IntxLine for NoIrq {
    fn set_level(&self, _asserted: bool) {}
}

struct Function {
    dev: Arc<Mutex<VirtioPciDevice>>,
    processor: QueueProcessor,
}

fn function(
    device: Box<dyn virtio::VirtioDevice>,
    mem: &GuestMemoryMmap,
    bar: u64,
    root: &mut PciRoot,
) -> Function {
    let irq = Arc::new(NoIrq);
    let dev =
        VirtioPciDevice::new(device, mem.clone(), bar, irq.clone(), Some(irq)).expect("device");
    let processor = dev.queue_processor();
    let dev = Arc::new(Mutex::new(dev));
    root.add_device(None, dev.clone()).expect("slot");
    Function { dev, processor }
}

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let seed = data.len().min(MEM_SEED);
    mem.write_slice(&data[..seed], GuestAddress(0)).unwrap();
    let ops = &data[seed..];

    let mut root = PciRoot::new(None);
    let blk = function(
        Box::new(Block::new(Box::new(FuzzDisk::new(0x4000, false)), "fuzz")),
        &mem,
        0x1_0000_0000,
        &mut root,
    );
    let (console, input) = Console::new(Box::new(std::io::sink()), 80, 25);
    let con = function(Box::new(console), &mem, 0x1_0000_8000, &mut root);
    let root = Arc::new(Mutex::new(root));
    let mut cfg_io = PciConfigIo::new(root.clone());
    let mut ecam = PciConfigMmio::new(root);
    let functions = [blk, con];

    // Each op: kind, function, offset (2 bytes), width selector, value (4 bytes).
    for op in ops.chunks_exact(9).take(512) {
        let f = &functions[usize::from(op[1] & 1)];
        let offset = u64::from(u16::from_le_bytes([op[2], op[3]]));
        let len = [1usize, 2, 4, 8][usize::from(op[4] & 3)];
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&op[5..9]);
        value[4..].copy_from_slice(&op[5..9]);
        let slot = u64::from(op[1] & 1) + 1;
        match op[0] % 8 {
            0 => f
                .dev
                .lock()
                .unwrap()
                .read(offset % VIRTIO_PCI_BAR_SIZE, &mut value[..len]),
            1 | 2 => f
                .dev
                .lock()
                .unwrap()
                .write(offset % VIRTIO_PCI_BAR_SIZE, &value[..len]),
            3 => ecam.read(slot << 15 | offset & 0xfff, &mut value[..len.min(4)]),
            4 => ecam.write(slot << 15 | offset & 0xfff, &value[..len.min(4)]),
            5 => {
                cfg_io.write(
                    0,
                    &(0x8000_0000u32 | (slot as u32) << 11 | u32::from(op[2] & 0xfc)).to_le_bytes(),
                );
                let port = 4 + u64::from(op[3] & 3);
                if op[0] & 8 == 0 {
                    cfg_io.write(port, &value[..len.min(4)]);
                } else {
                    cfg_io.read(port, &mut value[..len.min(4)]);
                }
            }
            6 => {
                let _ = f.processor.process_queue(usize::from(op[2] & 3));
            }
            _ => {
                input.push_input(&op[5..9]);
                let _ = functions[1].processor.process_queue(0);
            }
        }
    }
});
