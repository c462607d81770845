//! Kernel image loading (bzImage, ELF64/PVH, multiboot ELF32 and a.out kludge) on
//! arbitrary bytes: unknown or broken images are errors, never panics or writes outside
//! guest memory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

const RAM: u64 = 32 << 20;

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let layout = arch::memory_map::RamLayout::new(RAM).unwrap();
    let cfg = arch::boot::BootConfig {
        kernel: data,
        initrd: Some(b"initrd contents"),
        initrd_name: "module0",
        kernel_name: "kernel",
        cmdline: "console=ttyS0",
        rsdp_addr: 0xe0000,
        acpi_end: 0xe1000,
    };
    let _ = arch::boot::load(&mem, &layout, &cfg);
});
