//! Linux boot protocol (Documentation/arch/x86/boot.rst): the zero page (`boot_params`).

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress};

use super::{BootError, Initrd};
use crate::layout::ZERO_PAGE_ADDR;
use crate::memory_map::MemoryMapEntry;
use crate::GuestMemory;

const HDRS_MAGIC: u32 = 0x5372_6448;
const BOOT_FLAG: u16 = 0xaa55;
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const LOADFLAG_CAN_USE_HEAP: u8 = 0x80;
const HEAP_END_PTR: u16 = 0xfe00;
const DEFAULT_KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// `xloadflags` bit: the kernel has a 64-bit entry point at load address + 0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// Highest initrd address when the header does not say (protocol < 2.03).
pub const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

/// The setup header to use: the bzImage's own, or a synthesised one for an ELF vmlinux.
pub fn effective_header(from_image: Option<setup_header>) -> setup_header {
    from_image.unwrap_or(setup_header {
        boot_flag: BOOT_FLAG,
        header: HDRS_MAGIC,
        kernel_alignment: DEFAULT_KERNEL_ALIGNMENT,
        ..Default::default()
    })
}

/// Highest address (exclusive) the initrd may end at, per the header.
pub fn initrd_limit(hdr: &setup_header) -> u64 {
    if hdr.version >= 0x203 && hdr.initrd_addr_max != 0 {
        u64::from(hdr.initrd_addr_max) + 1
    } else {
        DEFAULT_INITRD_ADDR_MAX + 1
    }
}

/// Longest command line the kernel accepts (protocol ≥ 2.06 says; older: 255).
pub fn cmdline_limit(hdr: &setup_header, is_bzimage: bool) -> usize {
    if !is_bzimage {
        return usize::MAX;
    }
    if hdr.version >= 0x206 {
        hdr.cmdline_size as usize
    } else {
        255
    }
}

/// Fill and write the zero page; returns its address (RSI at the 64-bit entry).
pub fn write_zero_page(
    mem: &GuestMemory,
    hdr: setup_header,
    e820: &[MemoryMapEntry],
    cmdline_addr: u64,
    cmdline_len: usize,
    initrd: Option<&Initrd>,
    rsdp_addr: u64,
) -> Result<u64, BootError> {
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.loadflags |= LOADFLAG_CAN_USE_HEAP;
    params.hdr.heap_end_ptr = HEAP_END_PTR;
    params.hdr.cmd_line_ptr = cmdline_addr as u32;
    params.ext_cmd_line_ptr = (cmdline_addr >> 32) as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(i) = initrd {
        params.hdr.ramdisk_image = i.addr as u32;
        params.hdr.ramdisk_size = i.size as u32;
        params.ext_ramdisk_image = (i.addr >> 32) as u32;
        params.ext_ramdisk_size = (i.size >> 32) as u32;
    }
    params.acpi_rsdp_addr = rsdp_addr;
    if e820.len() > params.e820_table.len() {
        return Err(BootError::InvalidKernel(
            "memory map has too many entries for the zero page".into(),
        ));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = e820.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(BootError::Memory)?;
    Ok(ZERO_PAGE_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_map::RamLayout;

    #[test]
    fn zero_page_fields_land_at_protocol_offsets() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let layout = RamLayout::new(0x100_0000).unwrap();
        let initrd = Initrd {
            addr: 0xf0_0000,
            size: 0x1234,
        };
        let zp = write_zero_page(
            &mem,
            effective_header(None),
            &layout.e820(),
            0x20000,
            11,
            Some(&initrd),
            0xe0000,
        )
        .unwrap();
        let r8 = |o: u64| mem.read_obj::<u8>(GuestAddress(zp + o)).unwrap();
        let r32 = |o: u64| mem.read_obj::<u32>(GuestAddress(zp + o)).unwrap();
        let r64 = |o: u64| mem.read_obj::<u64>(GuestAddress(zp + o)).unwrap();
        assert_eq!(r8(0x1e8), 3); // e820_entries
        assert_eq!(r64(0x2d0 + 20 * 2), 0x100000); // third entry's address
        assert_eq!(r32(0x228), 0x20000); // cmd_line_ptr
        assert_eq!(r32(0x218), 0xf0_0000); // ramdisk_image
        assert_eq!(r32(0x21c), 0x1234); // ramdisk_size
        assert_eq!(r32(0x202), HDRS_MAGIC);
        assert_eq!(r8(0x210), LOADER_TYPE_UNDEFINED);
        assert_eq!(r64(0x70), 0xe0000); // acpi_rsdp_addr
    }

    #[test]
    fn limits_follow_the_protocol_version() {
        let mut h = setup_header {
            version: 0x20f,
            initrd_addr_max: 0x7fff_ffff,
            cmdline_size: 2047,
            ..Default::default()
        };
        assert_eq!(initrd_limit(&h), 0x8000_0000);
        assert_eq!(cmdline_limit(&h, true), 2047);
        h.version = 0x202;
        assert_eq!(initrd_limit(&h), 0x3800_0000);
        assert_eq!(cmdline_limit(&h, true), 255);
        assert_eq!(cmdline_limit(&h, false), usize::MAX);
    }
}
