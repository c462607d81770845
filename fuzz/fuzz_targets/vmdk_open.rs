//! Open a sparse-described file as a VMDK and exercise it (see sparse_image.rs).
//! Text descriptors may name any file as an extent, so only monolithic sparse inputs
//! (magic "KDMV", whose only extent is the input itself) are opened read-write.
#![no_main]

use block::Format;
use libfuzzer_sys::fuzz_target;

#[path = "sparse_image.rs"]
mod sparse_image;

fuzz_target!(|data: &[u8]| {
    // The first record must put "KDMV" at offset 0 for a read-write open.
    let monolithic = data.len() >= 10 && data[..4] == [0; 4] && &data[6..10] == b"KDMV";
    sparse_image::exercise(data, Format::Vmdk, monolithic)
});
