//! The CMOS/RTC at ports 0x70/0x71 under arbitrary guest port I/O (and an arbitrary
//! restored snapshot NVRAM): never a panic, reads always fill the access, and its own
//! state always restores.
//!
//! Input: byte 0 selects the RAM size, then 128 NVRAM bytes when byte 1 is odd (a restore),
//! then (op, value) pairs: op bit 0 read/write, bit 1 index/data port, bits 2-3 access size.
#![no_main]

use devices::cmos::{Cmos, CmosArgs, CmosState, WallClock};
use devices::{BusDevice, Persist};
use libfuzzer_sys::fuzz_target;

fn clock() -> WallClock {
    WallClock::from_unix(1_795_823_999)
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, mut rest)) = data.split_first() else {
        return;
    };
    let below = u64::from(size) << 24;
    let mut cmos = Cmos::with_clock(below, below << 4, clock);
    if let Some((&flag, tail)) = rest.split_first() {
        rest = tail;
        if flag & 1 == 1 {
            if let Some((nvram, tail)) = rest.split_first_chunk::<128>() {
                let state = CmosState {
                    version: 1,
                    index: flag >> 1,
                    nvram: nvram.to_vec(),
                };
                // A crafted state: refused unless it is one the CMOS can have.
                if let Ok(restored) = Cmos::restore(CmosArgs { clock }, &state) {
                    assert_eq!(restored.save(), state);
                    cmos = restored;
                }
                rest = tail;
            }
        }
    }
    for pair in rest.chunks_exact(2) {
        let (op, value) = (pair[0], pair[1]);
        let offset = u64::from(op >> 1 & 1);
        let len = 1usize << (op >> 2 & 3);
        if op & 1 == 0 {
            let mut buf = [0xaa_u8; 8];
            cmos.read(offset, &mut buf[..len]);
        } else {
            cmos.write(offset, &[value; 8][..len]);
        }
    }
    let state = cmos.save();
    assert!(state.index < 0x80);
    // Whatever the guest did, the CMOS's own state restores.
    assert!(Cmos::restore(CmosArgs { clock }, &state).is_ok());
});
