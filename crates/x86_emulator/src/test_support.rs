//! Test fixtures: guest memory with 4-level page tables, long-mode segment state, a fake
//! vCPU that keeps its state in plain structs, and the CPUID leaf 0DH of an AMX CPU.
//!
//! For tests and fuzzing only (feature `test-support`): the builders panic on misuse.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events};
use std::collections::HashMap;
use vm_memory::{Bytes, GuestAddress};

use crate::cpu::{CpuError, GuestDebug, VcpuState};
use crate::xsave_layout::XsaveLayout;
use crate::GuestMemory;

pub const MEM_SIZE: u64 = 16 << 20;
const TABLES_START: u64 = 0x10_0000;

/// A guest memory with a bump allocator for page-table pages.
pub struct PageTables {
    mem: GuestMemory,
    cr3: u64,
    next: u64,
}

impl Default for PageTables {
    fn default() -> Self {
        Self::new()
    }
}

impl PageTables {
    pub fn new() -> Self {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
        PageTables {
            mem,
            cr3: TABLES_START,
            next: TABLES_START + 0x1000,
        }
    }

    pub fn cr3(&self) -> u64 {
        self.cr3
    }

    pub fn mem(&self) -> GuestMemory {
        self.mem.clone()
    }

    fn table_at(&mut self, table: u64, index: u64) -> u64 {
        let addr = table + index * 8;
        let entry: u64 = self.mem.read_obj(GuestAddress(addr)).unwrap();
        if entry & 1 != 0 {
            return entry & 0x000f_ffff_ffff_f000;
        }
        let new = self.next;
        self.next += 0x1000;
        self.mem.write_obj(new | 0x7, GuestAddress(addr)).unwrap();
        new
    }

    /// Walk to the table at `depth` (0 = PML4) for `linear`, creating tables.
    fn table_for(&mut self, linear: u64, depth: usize) -> u64 {
        let mut table = self.cr3;
        for shift in [39u32, 30, 21].iter().take(depth) {
            table = self.table_at(table, (linear >> shift) & 0x1ff);
        }
        table
    }

    /// Map a 4 KiB page; returns the PTE's guest-physical address.
    pub fn map_4k(&mut self, linear: u64, phys: u64, writable: bool, user: bool) -> u64 {
        let pt = self.table_for(linear, 3);
        let pte = pt + ((linear >> 12) & 0x1ff) * 8;
        let flags = 1 | if writable { 2 } else { 0 } | if user { 4 } else { 0 };
        self.mem.write_obj(phys | flags, GuestAddress(pte)).unwrap();
        pte
    }

    pub fn map_2m(&mut self, linear: u64, phys: u64, writable: bool) {
        let pd = self.table_for(linear, 2);
        let flags = 1 | 0x80 | if writable { 2 } else { 0 };
        self.mem
            .write_obj(
                phys | flags,
                GuestAddress(pd + ((linear >> 21) & 0x1ff) * 8),
            )
            .unwrap();
    }

    pub fn map_1g(&mut self, linear: u64, phys: u64) {
        let pdpt = self.table_for(linear, 1);
        self.mem
            .write_obj(
                phys | 0x83,
                GuestAddress(pdpt + ((linear >> 30) & 0x1ff) * 8),
            )
            .unwrap();
    }

    /// Identity-map the first `bytes` of memory with 4 KiB pages, user-accessible.
    pub fn identity(&mut self, bytes: u64) {
        for page in (0..bytes).step_by(0x1000) {
            self.map_4k(page, page, true, true);
        }
    }
}

pub fn segment(selector: u16, dpl: u8, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// 64-bit mode at CPL 0 with paging from `cr3`.
pub fn long_mode_sregs(cr3: u64) -> kvm_sregs {
    kvm_sregs {
        cs: segment(0x10, 0, true),
        ss: segment(0x18, 0, false),
        ds: segment(0, 0, false),
        es: segment(0, 0, false),
        fs: segment(0, 0, false),
        gs: segment(0, 0, false),
        cr0: 0x8005_0033,
        cr3,
        cr4: 0x20 | 0x200 | 0x40000,
        efer: 0xd01,
        ..Default::default()
    }
}

/// A vCPU whose state is plain data. Its XSAVE layout is the host's unless a test gives it
/// another; its XSAVE region is as large as that layout's area for every component.
pub struct FakeVcpu {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: Vec<u8>,
    pub layout: XsaveLayout,
    pub xcr0: u64,
    pub events: kvm_vcpu_events,
    pub msrs: HashMap<u32, u64>,
    pub debug: Option<GuestDebug>,
}

impl Default for FakeVcpu {
    fn default() -> Self {
        let layout = XsaveLayout::host();
        FakeVcpu {
            regs: kvm_regs::default(),
            sregs: kvm_sregs::default(),
            xsave: vec![0; layout.max_size()],
            layout,
            xcr0: 1,
            events: kvm_vcpu_events::default(),
            msrs: HashMap::new(),
            debug: None,
        }
    }
}

impl VcpuState for FakeVcpu {
    fn regs(&self) -> Result<kvm_regs, CpuError> {
        Ok(self.regs)
    }
    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), CpuError> {
        self.regs = *regs;
        Ok(())
    }
    fn sregs(&self) -> Result<kvm_sregs, CpuError> {
        Ok(self.sregs)
    }
    fn set_sregs(&mut self, sregs: &kvm_sregs) -> Result<(), CpuError> {
        self.sregs = *sregs;
        Ok(())
    }
    fn xsave(&self) -> Result<Vec<u8>, CpuError> {
        Ok(self.xsave.clone())
    }
    fn set_xsave(&mut self, xsave: &[u8]) -> Result<(), CpuError> {
        self.xsave = xsave.to_vec();
        Ok(())
    }
    fn xsave_layout(&self) -> Result<XsaveLayout, CpuError> {
        Ok(self.layout.clone())
    }
    fn xcr0(&self) -> Result<u64, CpuError> {
        Ok(self.xcr0)
    }
    fn events(&self) -> Result<kvm_vcpu_events, CpuError> {
        Ok(self.events)
    }
    fn set_events(&mut self, events: &kvm_vcpu_events) -> Result<(), CpuError> {
        self.events = *events;
        Ok(())
    }
    fn msr(&self, index: u32) -> Result<u64, CpuError> {
        self.msrs.get(&index).copied().ok_or(CpuError::Msr(index))
    }
    fn set_msr(&mut self, index: u32, value: u64) -> Result<(), CpuError> {
        self.msrs.insert(index, value);
        Ok(())
    }
    fn set_guest_debug_mode(&mut self, mode: GuestDebug) -> Result<(), CpuError> {
        self.debug = Some(mode);
        Ok(())
    }
}

/// XCR0 of a Sapphire Rapids guest with every user component: x87, SSE, AVX, opmask,
/// ZMM_Hi256, Hi16_ZMM, PKRU, AMX TILECFG (17) and TILEDATA (18).
pub const SPR_XCR0: u64 = 0x602e7;

/// CPUID leaf 0DH of an Intel Sapphire Rapids CPU (other leaves read as 0): a standard-format
/// area of 11008 bytes, the 8 KiB of tile data last, XFD-capable.
pub fn sapphire_rapids_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    if leaf != 0xd {
        return [0; 4];
    }
    match sub {
        0 => [SPR_XCR0 as u32, 11008, 11008, 0],
        // XSAVEOPT, XSAVEC, XGETBV with ECX = 1, XSAVES, XFD.
        1 => [0x1f, 0, 0, 0],
        2 => [256, 576, 0, 0],
        5 => [64, 1088, 0, 0],
        6 => [512, 1152, 0, 0],
        7 => [1024, 1664, 0, 0],
        9 => [8, 2688, 0, 0],
        17 => [64, 2752, 0b10, 0],
        18 => [8192, 2816, 0b110, 0],
        _ => [0; 4],
    }
}
