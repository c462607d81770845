//! Initial vCPU state for each way vessel enters a guest: GDT, identity page tables and
//! the register values of the boot processor.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use crate::layout::{BOOT_STACK_POINTER, GDT_ADDR, IDT_ADDR, PDPT_ADDR, PD_ADDR, PML4_ADDR};
use crate::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum CpuStateError {
    #[error("cannot write the {what} to guest memory: {source}")]
    Write {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// CPU mode and registers the guest's entry point expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// Linux 64-bit boot protocol: long mode with identity paging, RSI = zero page.
    Linux64 { entry: u64, zero_page: u64 },
    /// Xen PVH: 32-bit protected mode, paging off, EBX = hvm_start_info.
    Pvh { entry: u64, start_info: u64 },
    /// Multiboot v1: 32-bit protected mode, paging off, EAX = magic, EBX = multiboot info.
    Multiboot { entry: u64, info: u64 },
}

pub const MULTIBOOT_BOOTLOADER_MAGIC: u64 = 0x2bad_b002;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Selectors of vessel's boot GDT.
const CODE_SELECTOR: u16 = 0x10;
const DATA_SELECTOR: u16 = 0x18;
const TSS_SELECTOR: u16 = 0x20;

/// A GDT descriptor from flags, base and limit (the layout of the x86 descriptor).
const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The KVM segment register a GDT descriptor describes.
fn segment_from_gdt(entry: u64, table_index: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let mut limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let granularity = ((entry >> 55) & 1) as u8;
    if granularity == 1 {
        limit = (limit << 12) | 0xfff;
    }
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector: table_index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granularity,
        avl: ((entry >> 52) & 1) as u8,
        unusable: (present == 0) as u8,
        padding: 0,
    }
}

/// GDT for 64-bit entry: null, null, 64-bit code, data, TSS.
const GDT_LONG: [u64; 5] = [
    0,
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// GDT for 32-bit entry: null, null, flat 32-bit code, flat data, TSS.
const GDT_PROTECTED: [u64; 5] = [
    0,
    0,
    gdt_entry(0xc09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// Write the GDT/IDT (and page tables for long mode) and fill `sregs` for `mode`.
pub fn setup_sregs(
    mem: &GuestMemory,
    mode: EntryMode,
    sregs: &mut kvm_sregs,
) -> Result<(), CpuStateError> {
    let long = matches!(mode, EntryMode::Linux64 { .. });
    let gdt = if long { &GDT_LONG } else { &GDT_PROTECTED };
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + i as u64 * 8))
            .map_err(|source| CpuStateError::Write {
                what: "GDT",
                source,
            })?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(|source| CpuStateError::Write {
            what: "IDT",
            source,
        })?;

    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;

    let code = segment_from_gdt(gdt[2], CODE_SELECTOR / 8);
    let data = segment_from_gdt(gdt[3], DATA_SELECTOR / 8);
    let tss = segment_from_gdt(gdt[4], TSS_SELECTOR / 8);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    sregs.cr0 = (sregs.cr0 | X86_CR0_PE | X86_CR0_ET) & !X86_CR0_PG;
    sregs.cr4 &= !X86_CR4_PAE;
    sregs.efer &= !(EFER_LME | EFER_LMA);
    if long {
        write_identity_page_tables(mem)?;
        sregs.cr3 = PML4_ADDR;
        sregs.cr4 |= X86_CR4_PAE;
        sregs.cr0 |= X86_CR0_PG;
        sregs.efer |= EFER_LME | EFER_LMA;
    }
    Ok(())
}

/// Identity-map the first 4 GiB with 2 MiB pages (PML4 → 1 PDPT → 4 page directories).
fn write_identity_page_tables(mem: &GuestMemory) -> Result<(), CpuStateError> {
    let w = |value: u64, addr: u64| {
        mem.write_obj(value, GuestAddress(addr))
            .map_err(|source| CpuStateError::Write {
                what: "page tables",
                source,
            })
    };
    w(PDPT_ADDR | 0x3, PML4_ADDR)?;
    for dir in 0..4u64 {
        let pd = PD_ADDR + dir * 0x1000;
        w(pd | 0x3, PDPT_ADDR + dir * 8)?;
        for i in 0..512u64 {
            let phys = (dir << 30) | (i << 21);
            w(phys | 0x83, pd + i * 8)?;
        }
    }
    Ok(())
}

/// General-purpose registers at the entry point.
pub fn boot_regs(mode: EntryMode) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match mode {
        EntryMode::Linux64 { entry, zero_page } => {
            regs.rip = entry;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = zero_page;
        }
        EntryMode::Pvh { entry, start_info } => {
            regs.rip = entry;
            regs.rbx = start_info;
        }
        EntryMode::Multiboot { entry, info } => {
            regs.rip = entry;
            regs.rax = MULTIBOOT_BOOTLOADER_MAGIC;
            regs.rbx = info;
        }
    }
    regs
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let code = segment_from_gdt(GDT_LONG[2], 2);
        assert_eq!(
            (code.base, code.limit, code.l, code.db, code.g, code.present),
            (0, 0xffff_ffff, 1, 0, 1, 1)
        );
        assert_eq!(code.selector, 0x10);
        let code32 = segment_from_gdt(GDT_PROTECTED[2], 2);
        assert_eq!((code32.l, code32.db, code32.type_), (0, 1, 0xb));
        let data = segment_from_gdt(GDT_PROTECTED[3], 3);
        assert_eq!((data.type_, data.s, data.selector), (0x3, 1, 0x18));
    }

    #[test]
    fn long_mode_sets_paging_and_identity_maps_4gib() {
        let m = mem();
        let mut s = kvm_sregs::default();
        setup_sregs(
            &m,
            EntryMode::Linux64 {
                entry: 0x100000,
                zero_page: 0x7000,
            },
            &mut s,
        )
        .unwrap();
        assert_eq!(s.cr3, PML4_ADDR);
        assert_ne!(s.cr0 & X86_CR0_PG, 0);
        assert_ne!(s.efer & EFER_LMA, 0);
        let pml4: u64 = m.read_obj(GuestAddress(PML4_ADDR)).unwrap();
        assert_eq!(pml4, PDPT_ADDR | 3);
        // Last 2 MiB page below 4 GiB maps itself.
        let last: u64 = m
            .read_obj(GuestAddress(PD_ADDR + 3 * 0x1000 + 511 * 8))
            .unwrap();
        assert_eq!(last, 0xffe0_0000 | 0x83);
    }

    #[test]
    fn protected_mode_has_paging_off() {
        let m = mem();
        let mut s = kvm_sregs {
            cr0: X86_CR0_PG,
            efer: EFER_LME,
            ..Default::default()
        };
        setup_sregs(
            &m,
            EntryMode::Multiboot {
                entry: 0x100000,
                info: 0x6000,
            },
            &mut s,
        )
        .unwrap();
        assert_eq!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!(s.efer & EFER_LME, 0);
        assert_eq!(s.cs.db, 1);
        let r = boot_regs(EntryMode::Multiboot {
            entry: 0x100000,
            info: 0x6000,
        });
        assert_eq!((r.rax, r.rbx, r.rip), (0x2bad_b002, 0x6000, 0x100000));
    }
}
