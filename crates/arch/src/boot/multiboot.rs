//! Multiboot (v1) kernels: header search, loading (ELF32 or the a.out kludge) and the
//! multiboot information structure.

use vm_memory::{Bytes, GuestAddress};

use super::{elf32, BootError, Initrd};
use crate::layout::{
    BIOS_AREA_START, BOOT_INFO_ADDR, BOOT_INFO_SIZE, CMDLINE_ADDR, EBDA_START, GDT_ADDR,
    HIMEM_START, IDT_ADDR,
};
use crate::memory_map::MemoryMapEntry;
use crate::GuestMemory;

pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// The header must lie in the first 8 KiB of the image, 4-byte aligned.
const SEARCH_LIMIT: usize = 8192;

const FLAG_AOUT_KLUDGE: u32 = 1 << 16;

const INFO_MEMORY: u32 = 1 << 0;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MODS: u32 = 1 << 3;
const INFO_MMAP: u32 = 1 << 6;
const INFO_LOADER_NAME: u32 = 1 << 9;

/// The multiboot header found in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// File offset of the header.
    pub offset: usize,
    pub flags: u32,
    pub header_addr: u32,
    pub load_addr: u32,
    pub load_end_addr: u32,
    pub bss_end_addr: u32,
    pub entry_addr: u32,
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Find a valid multiboot header (magic and checksum) in the first 8 KiB of `image`.
pub fn find_header(image: &[u8]) -> Option<Header> {
    let limit = image.len().min(SEARCH_LIMIT);
    (0..limit.saturating_sub(11)).step_by(4).find_map(|off| {
        if le32(image, off)? != HEADER_MAGIC {
            return None;
        }
        let flags = le32(image, off + 4)?;
        let sum = HEADER_MAGIC
            .wrapping_add(flags)
            .wrapping_add(le32(image, off + 8)?);
        if sum != 0 {
            return None;
        }
        let field = |i: usize| le32(image, off + 12 + 4 * i).unwrap_or(0);
        Some(Header {
            offset: off,
            flags,
            header_addr: field(0),
            load_addr: field(1),
            load_end_addr: field(2),
            bss_end_addr: field(3),
            entry_addr: field(4),
        })
    })
}

/// Where the image was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub entry: u64,
    /// First byte after the kernel (including bss).
    pub end: u64,
}

/// A guest-physical range that vessel itself fills for a multiboot boot, which a kernel
/// must not load over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    pub start: u64,
    pub end: u64,
    pub what: &'static str,
}

/// What a multiboot boot writes below 1 MiB besides the kernel: GDT and IDT, the multiboot
/// information page, the command line (`cmdline_len` bytes and its NUL) and the ACPI tables
/// `[rsdp_addr, acpi_end)`. (The EBDA with the MP table lies in the hole `load` refuses.)
pub fn reserved_areas(cmdline_len: usize, rsdp_addr: u64, acpi_end: u64) -> [Reserved; 4] {
    [
        Reserved {
            start: GDT_ADDR,
            end: IDT_ADDR + 8,
            what: "vessel's GDT and IDT",
        },
        Reserved {
            start: BOOT_INFO_ADDR,
            end: BOOT_INFO_ADDR + BOOT_INFO_SIZE,
            what: "the multiboot information",
        },
        Reserved {
            start: CMDLINE_ADDR,
            end: CMDLINE_ADDR + cmdline_len as u64 + 1,
            what: "the kernel command line",
        },
        Reserved {
            start: rsdp_addr,
            end: acpi_end,
            what: "vessel's ACPI tables",
        },
    ]
}

/// Check that `[start, start + len)` is loadable, as QEMU's multiboot loader allows:
/// conventional RAM below the EBDA, the BIOS area `[0xe0000, 1 MiB)` and RAM from 1 MiB to
/// `ram_end`, but nothing vessel itself writes (`reserved`).
fn check_range(
    start: u64,
    len: u64,
    ram_end: u64,
    reserved: &[Reserved],
    what: &str,
) -> Result<(), BootError> {
    let end = start
        .checked_add(len)
        .ok_or_else(|| BootError::InvalidKernel(format!("{what} wraps")))?;
    if len == 0 {
        return Ok(());
    }
    let in_hole = start < BIOS_AREA_START && end > EBDA_START;
    if in_hole || end > ram_end {
        return Err(BootError::InvalidKernel(format!(
            "{what} [{start:#x}, {end:#x}) is outside loadable guest RAM \
             ([0, {EBDA_START:#x}) and [{BIOS_AREA_START:#x}, {ram_end:#x}))"
        )));
    }
    if let Some(r) = reserved.iter().find(|r| start < r.end && r.start < end) {
        return Err(BootError::InvalidKernel(format!(
            "{what} [{start:#x}, {end:#x}) overlaps {} [{:#x}, {:#x})",
            r.what, r.start, r.end
        )));
    }
    Ok(())
}

/// Load the kernel image into guest memory.
pub fn load(
    mem: &GuestMemory,
    image: &[u8],
    header: &Header,
    ram_end: u64,
    reserved: &[Reserved],
) -> Result<Loaded, BootError> {
    if header.flags & FLAG_AOUT_KLUDGE != 0 {
        return load_aout_kludge(mem, image, header, ram_end, reserved);
    }
    let elf = elf32::parse(image)
        .map_err(|e| BootError::InvalidKernel(format!("multiboot ELF32: {e}")))?;
    let mut end = 0u64;
    for seg in &elf.segments {
        check_range(seg.paddr, seg.mem_size, ram_end, reserved, "ELF segment")?;
        let data = &image[seg.file_offset..seg.file_offset + seg.file_size as usize];
        mem.write_slice(data, GuestAddress(seg.paddr))
            .map_err(BootError::Memory)?;
        let bss = (seg.mem_size - seg.file_size) as usize;
        if bss > 0 {
            let zeroes = vec![0u8; bss];
            mem.write_slice(&zeroes, GuestAddress(seg.paddr + seg.file_size))
                .map_err(BootError::Memory)?;
        }
        end = end.max(seg.paddr + seg.mem_size);
    }
    Ok(Loaded {
        entry: u64::from(elf.entry),
        end,
    })
}

/// Load with the addresses from the header (flag 16): the file from `header_addr`'s offset
/// is copied to `load_addr` up to `load_end_addr`, then zeroed up to `bss_end_addr`.
fn load_aout_kludge(
    mem: &GuestMemory,
    image: &[u8],
    h: &Header,
    ram_end: u64,
    reserved: &[Reserved],
) -> Result<Loaded, BootError> {
    let bad = |m: &str| BootError::InvalidKernel(format!("multiboot header: {m}"));
    if h.header_addr < h.load_addr {
        return Err(bad("header_addr is below load_addr"));
    }
    let file_start = (h.offset as u64)
        .checked_sub(u64::from(h.header_addr - h.load_addr))
        .and_then(|start| usize::try_from(start).ok())
        .ok_or_else(|| bad("load_addr is before the file"))?;
    let load_len = if h.load_end_addr == 0 {
        image
            .len()
            .checked_sub(file_start)
            .ok_or_else(|| bad("load_addr is before the file"))?
    } else {
        h.load_end_addr
            .checked_sub(h.load_addr)
            .ok_or_else(|| bad("load_end_addr < load_addr"))? as usize
    };
    let data = image
        .get(
            file_start
                ..file_start
                    .checked_add(load_len)
                    .ok_or_else(|| bad("size wraps"))?,
        )
        .ok_or_else(|| bad("load range is beyond the end of the file"))?;
    let load = u64::from(h.load_addr);
    let end = if h.bss_end_addr == 0 {
        load + load_len as u64
    } else {
        u64::from(h.bss_end_addr)
    };
    if end < load + load_len as u64 {
        return Err(bad("bss_end_addr is below load_end_addr"));
    }
    check_range(load, end - load, ram_end, reserved, "multiboot image")?;
    mem.write_slice(data, GuestAddress(load))
        .map_err(BootError::Memory)?;
    let zeroes = vec![0u8; (end - load - load_len as u64) as usize];
    mem.write_slice(&zeroes, GuestAddress(load + load_len as u64))
        .map_err(BootError::Memory)?;
    let entry = u64::from(h.entry_addr);
    if entry < load || entry >= end {
        return Err(bad("entry_addr is outside the loaded image"));
    }
    Ok(Loaded { entry, end })
}

/// The command line a multiboot kernel gets: its own name, then the arguments, as GRUB
/// and QEMU pass it (`"kernel.flat arg1 arg2"`). Kernels built for them (kvm-unit-tests,
/// Xen, hobby kernels) take the first word as argv[0] and skip it; without it they would
/// take the first argument for their own name and lose it.
pub fn command_line(kernel_name: &str, args: &str) -> String {
    match (kernel_name.is_empty(), args.is_empty()) {
        (true, _) => args.to_string(),
        (false, true) => kernel_name.to_string(),
        (false, false) => format!("{kernel_name} {args}"),
    }
}

const MBI_SIZE: u64 = 0x58;
const MMAP_OFFSET: u64 = 0x100;
const MODS_OFFSET: u64 = 0x300;
const STRINGS_OFFSET: u64 = 0x400;
const LOADER_NAME: &[u8] = b"vessel\0";

/// Write the multiboot information structure; returns its address (EBX at entry).
pub fn write_info(
    mem: &GuestMemory,
    e820: &[MemoryMapEntry],
    low_ram_end: u64,
    cmdline_addr: u64,
    module: Option<(&Initrd, &str)>,
) -> Result<u64, BootError> {
    let base = BOOT_INFO_ADDR;
    let w32 = |v: u32, addr: u64| {
        mem.write_obj(v, GuestAddress(addr))
            .map_err(BootError::Memory)
    };
    mem.write_slice(&[0u8; MBI_SIZE as usize], GuestAddress(base))
        .map_err(BootError::Memory)?;

    let mut flags = INFO_MEMORY | INFO_CMDLINE | INFO_MMAP | INFO_LOADER_NAME;
    w32((EBDA_START / 1024) as u32, base + 4)?; // mem_lower in KiB
    w32(
        ((low_ram_end - HIMEM_START) / 1024).min(u64::from(u32::MAX)) as u32,
        base + 8,
    )?; // mem_upper
    w32(cmdline_addr as u32, base + 16)?;

    let mmap = base + MMAP_OFFSET;
    if e820.len() as u64 * 24 > MODS_OFFSET - MMAP_OFFSET {
        return Err(BootError::InvalidKernel(
            "memory map too long for multiboot info".into(),
        ));
    }
    for (i, e) in e820.iter().enumerate() {
        let at = mmap + i as u64 * 24;
        w32(20, at)?;
        mem.write_obj(e.addr, GuestAddress(at + 4))
            .map_err(BootError::Memory)?;
        mem.write_obj(e.size, GuestAddress(at + 12))
            .map_err(BootError::Memory)?;
        w32(e.kind, at + 20)?;
    }
    w32((e820.len() * 24) as u32, base + 44)?;
    w32(mmap as u32, base + 48)?;

    let name_addr = base + STRINGS_OFFSET;
    mem.write_slice(LOADER_NAME, GuestAddress(name_addr))
        .map_err(BootError::Memory)?;
    w32(name_addr as u32, base + 64)?;

    if let Some((initrd, name)) = module {
        let string_addr = name_addr + LOADER_NAME.len() as u64;
        let max = (BOOT_INFO_ADDR + BOOT_INFO_SIZE - string_addr - 1) as usize;
        let name = &name.as_bytes()[..name.len().min(max)];
        mem.write_slice(name, GuestAddress(string_addr))
            .map_err(BootError::Memory)?;
        mem.write_obj(0u8, GuestAddress(string_addr + name.len() as u64))
            .map_err(BootError::Memory)?;
        let mods = base + MODS_OFFSET;
        w32(initrd.addr as u32, mods)?;
        w32((initrd.addr + initrd.size) as u32, mods + 4)?;
        w32(string_addr as u32, mods + 8)?;
        w32(0, mods + 12)?;
        w32(1, base + 20)?;
        w32(mods as u32, base + 24)?;
        flags |= INFO_MODS;
    }
    w32(flags, base)?;
    Ok(base)
}

/// Where module 0 goes: after the kernel, page aligned (what header flag 0 asks for;
/// vessel always aligns), and in high memory even when the kernel is in low memory.
pub fn module_address(kernel_end: u64) -> u64 {
    (kernel_end.max(HIMEM_START) + 0xfff) & !0xfff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_map::RamLayout;

    fn header_bytes(flags: u32, extra: &[u32]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&HEADER_MAGIC.to_le_bytes());
        v.extend_from_slice(&flags.to_le_bytes());
        v.extend_from_slice(&(0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags)).to_le_bytes());
        for e in extra {
            v.extend_from_slice(&e.to_le_bytes());
        }
        v
    }

    #[test]
    fn finds_header_only_with_valid_checksum_and_alignment() {
        let mut img = vec![0u8; 64];
        img.extend(header_bytes(3, &[]));
        assert_eq!(find_header(&img).unwrap().offset, 64);
        let mut bad = img.clone();
        bad[72] ^= 1;
        assert!(find_header(&bad).is_none());
        let mut unaligned = vec![0u8; 2];
        unaligned.extend(header_bytes(3, &[]));
        assert!(find_header(&unaligned).is_none());
        let mut far = vec![0u8; 8192];
        far.extend(header_bytes(3, &[]));
        assert!(find_header(&far).is_none());
    }

    #[test]
    fn aout_kludge_loads_at_load_addr() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        // Header at file offset 0 describes itself at 0x100000; 32 bytes of file then bss.
        let mut img = header_bytes(
            FLAG_AOUT_KLUDGE,
            &[0x100000, 0x100000, 0x100040, 0x101000, 0x100030],
        );
        img.resize(0x40, 0xcc);
        let h = find_header(&img).unwrap();
        let l = load(&mem, &img, &h, 0x40_0000, &[]).unwrap();
        assert_eq!(
            l,
            Loaded {
                entry: 0x100030,
                end: 0x101000
            }
        );
        let b: u8 = mem.read_obj(GuestAddress(0x10003f)).unwrap();
        assert_eq!(b, 0xcc);
        let bad_entry = header_bytes(
            FLAG_AOUT_KLUDGE,
            &[0x100000, 0x100000, 0x100040, 0x101000, 0x200000],
        );
        let mut img2 = bad_entry;
        img2.resize(0x40, 0);
        assert!(load(&mem, &img2, &find_header(&img2).unwrap(), 0x40_0000, &[]).is_err());
    }

    /// The fuzzer's find: a header at offset 0 claiming to sit 0x1000 bytes past
    /// `load_addr` puts the file's start before byte 0. That is an error, not an overflow.
    #[test]
    fn aout_kludge_refuses_a_load_addr_before_the_file() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let mut img = header_bytes(
            FLAG_AOUT_KLUDGE,
            &[0x101000, 0x100000, 0x100040, 0x101000, 0x100030],
        );
        img.resize(0x40, 0);
        let e = load(&mem, &img, &find_header(&img).unwrap(), 0x40_0000, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("load_addr is before the file"), "{e}");
    }

    /// An ELF32 multiboot kernel with one LOAD segment of 0x20 file bytes at `paddr`.
    fn elf_at(paddr: u32) -> (Vec<u8>, Header) {
        use super::super::elf32::tests::elf;
        let mut img = elf(&[[1, 0x100, paddr, paddr, 0x20, 0x40, 5, 4]]);
        img[0x100..0x120].fill(0xab);
        let hdr = header_bytes(0, &[]);
        img[0x180..0x180 + hdr.len()].copy_from_slice(&hdr);
        let h = find_header(&img).unwrap();
        (img, h)
    }

    #[test]
    fn elf_segments_load_below_1_mib_where_qemu_loads_them() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let reserved = reserved_areas(10, 0xe0000, 0xe0800);
        // The BIOS area above the ACPI tables (ld's headers-only segment at 0xff000) and
        // conventional memory away from vessel's structures load.
        for paddr in [0xff000, 0x10000, 0x90000] {
            let (img, h) = elf_at(paddr);
            load(&mem, &img, &h, 0x40_0000, &reserved).unwrap();
            let b: u8 = mem.read_obj(GuestAddress(u64::from(paddr) + 0x1f)).unwrap();
            assert_eq!(b, 0xab, "{paddr:#x}");
        }
        let refused = |paddr: u32, why: &str| {
            let (img, h) = elf_at(paddr);
            let e = load(&mem, &img, &h, 0x40_0000, &reserved)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{paddr:#x}: {e}");
        };
        refused(0x9fc00, "outside loadable guest RAM"); // EBDA
        refused(0xb8000, "outside loadable guest RAM"); // VGA hole
        refused(0x3f_fff0, "outside loadable guest RAM"); // past the end of RAM
        refused(0xe07f0, "vessel's ACPI tables");
        refused(0x6010, "the multiboot information");
        refused(0x20000, "the kernel command line");
        refused(0x500, "vessel's GDT and IDT");
        // Past the command line's NUL is free again.
        let (img, h) = elf_at(0x2000b);
        load(&mem, &img, &h, 0x40_0000, &reserved).unwrap();
    }

    #[test]
    fn info_has_memory_mmap_cmdline_and_module() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let layout = RamLayout::new(0x40_0000).unwrap();
        let initrd = Initrd {
            addr: 0x200000,
            size: 100,
        };
        let addr = write_info(
            &mem,
            &layout.e820(),
            layout.low_end(),
            0x20000,
            Some((&initrd, "mod0")),
        )
        .unwrap();
        let r = |off: u64| mem.read_obj::<u32>(GuestAddress(addr + off)).unwrap();
        assert_eq!(
            r(0),
            INFO_MEMORY | INFO_CMDLINE | INFO_MMAP | INFO_LOADER_NAME | INFO_MODS
        );
        assert_eq!(r(4), 639);
        assert_eq!(r(8), 3072);
        assert_eq!(r(16), 0x20000);
        assert_eq!((r(20), r(44)), (1, 3 * 24));
        let mods = u64::from(r(24));
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(mods + 4)).unwrap(),
            0x200064
        );
    }

    #[test]
    fn command_line_starts_with_the_kernel_name() {
        assert_eq!(
            command_line("x86/vmexit.flat", "cpuid"),
            "x86/vmexit.flat cpuid"
        );
        assert_eq!(command_line("x86/msr.flat", ""), "x86/msr.flat");
        assert_eq!(command_line("", "a b"), "a b");
        assert_eq!(command_line("", ""), "");
    }

    #[test]
    fn kvm_unit_tests_realmode_loads_at_32_kib() {
        // kvm-unit-tests' realmode.flat links at 0x8000: free conventional memory.
        let reserved = reserved_areas(20, 0xe0000, 0xe0800);
        let ram_end = 0x40_0000;
        assert!(check_range(0x8000, 0x5a30, ram_end, &reserved, "seg").is_ok());
        assert!(check_range(0x1f000, 0x2000, ram_end, &reserved, "seg").is_err());
        assert!(check_range(u64::MAX, 2, ram_end, &reserved, "seg").is_err());
    }

    #[test]
    fn module_goes_above_1mib_after_the_kernel() {
        assert_eq!(module_address(0xda30), HIMEM_START);
        assert_eq!(module_address(0x10_0001), 0x10_1000);
    }
}
