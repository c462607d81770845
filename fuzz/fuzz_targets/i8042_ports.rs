//! The i8042 keyboard controller (ports 0x60/0x64) under arbitrary guest port I/O, host
//! Ctrl-Alt-Del and snapshot restores: never a panic, the output queue stays bounded, and
//! its own state always restores.
//!
//! Input: (op, value) pairs: op bits 0-2 pick data read / status read / data write /
//! command write / Ctrl-Alt-Del / state round trip / restore of a crafted state.
#![no_main]

use devices::i8042::{I8042Args, I8042State, I8042};
use devices::{Persist, VmExit};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::EventFd;

fuzz_target!(|data: &[u8]| {
    let Ok(exit) = VmExit::new() else { return };
    let Ok(irq) = EventFd::new(libc::EFD_NONBLOCK) else {
        return;
    };
    // Each controller built gets the same exit line and a clone of the interrupt.
    let args = || {
        Some(I8042Args {
            exit: exit.clone(),
            irq: Some(irq.try_clone().ok()?),
        })
    };
    let Ok(own) = irq.try_clone() else { return };
    let mut kbd = I8042::new(exit.clone()).with_interrupt(own);
    for pair in data.chunks_exact(2) {
        let (op, value) = (pair[0], pair[1]);
        match op & 7 {
            0 => {
                kbd.read_data();
            }
            1 => {
                kbd.read_status();
            }
            2 => kbd.write_data(value),
            3 => kbd.write_command(value),
            4 => kbd.send_ctrl_alt_del(),
            5 => {
                let state = kbd.save();
                let Some(args) = args() else { return };
                match I8042::restore(args, &state) {
                    Ok(restored) => kbd = restored,
                    Err(e) => panic!("an i8042's own state does not restore: {e}"),
                }
                assert_eq!(kbd.save(), state);
            }
            _ => {
                let crafted = I8042State {
                    version: 1,
                    status: value,
                    output: vec![value; usize::from(op >> 3) * 4],
                    control: value.rotate_left(3),
                    outp: value ^ op,
                    pending_write: (op & 0x80 != 0).then_some(value),
                };
                let Some(args) = args() else { return };
                if let Ok(restored) = I8042::restore(args, &crafted) {
                    kbd = restored;
                }
            }
        }
        assert!(kbd.save().output.len() <= 64);
    }
});
