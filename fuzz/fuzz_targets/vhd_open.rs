//! Open a sparse-described file as a vhd image and exercise it (see sparse_image.rs).
#![no_main]

use block::Format;
use libfuzzer_sys::fuzz_target;

#[path = "sparse_image.rs"]
mod sparse_image;

fuzz_target!(|data: &[u8]| sparse_image::exercise(data, Format::Vhd, true));
