//! The 16550 UART (ports 0x3f8..0x3ff) under arbitrary guest port I/O interleaved with
//! host console input: never a panic, and the snapshot state it reports restores.
//!
//! Input: (op, value) pairs: op bits 0-1 read / write / host input / snapshot round trip,
//! bits 2-4 the register offset (bit 5 adds an out-of-range offset), bits 6-7 access size.
#![no_main]

use devices::serial::{Serial, SerialArgs};
use devices::{BusDevice, Persist};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::EventFd;

fn uart() -> Option<Serial> {
    Some(Serial::new(
        EventFd::new(libc::EFD_NONBLOCK).ok()?,
        Box::new(std::io::sink()),
    ))
}

fuzz_target!(|data: &[u8]| {
    let Some(mut serial) = uart() else { return };
    for pair in data.chunks_exact(2) {
        let (op, value) = (pair[0], pair[1]);
        let offset = u64::from(op >> 2 & 7) + if op & 0x20 != 0 { 0x100 } else { 0 };
        let len = 1usize << (op >> 6 & 3);
        match op & 3 {
            0 => {
                let mut buf = [0xaa_u8; 8];
                serial.read(offset, &mut buf[..len]);
            }
            1 => serial.write(offset, &[value; 8][..len]),
            2 => {
                if serial.wants_input() {
                    serial.queue_input(&vec![value; usize::from(value >> 3) + 1]);
                }
            }
            _ => {
                let state = serial.save();
                let Ok(interrupt) = EventFd::new(libc::EFD_NONBLOCK) else {
                    return;
                };
                let args = SerialArgs {
                    interrupt,
                    output: Box::new(std::io::sink()),
                };
                match Serial::restore(args, &state) {
                    Ok(restored) => serial = restored,
                    Err(e) => panic!("a UART's own state does not restore: {e}"),
                }
                assert_eq!(serial.save(), state);
            }
        }
    }
});
