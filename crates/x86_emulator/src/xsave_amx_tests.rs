//! The XSAVE family on a vCPU with an AMX layout (Sapphire Rapids' CPUID leaf 0DH, given to
//! the fake vCPU), so areas of 11008 bytes are covered on any host: where each component
//! lands in both formats, round trips, XFD-disabled tile data, and the regions and CPUIDs
//! the emulator refuses.

use super::*;
use crate::test_support::{long_mode_sregs, sapphire_rapids_cpuid, FakeVcpu, PageTables, SPR_XCR0};
use crate::GuestMemory;
use crate::{emulate_at_rip, EmulationError, Exception, Outcome};
use vm_memory::{Bytes, GuestAddress};

/// The standard-format area of SPR_XCR0.
const AREA: usize = 11008;
const TILECFG: u64 = 1 << 17;
const TILEDATA: u64 = 1 << 18;
const CODE_AT: u64 = 0x8000;
const MEM_AT: u64 = 0x9000;
/// Guest memory compared after an instruction: the area and 256 bytes past it.
const SPAN: usize = AREA + 256;

const XRSTOR64: [u8; 4] = [0x48, 0x0f, 0xae, 0x2f];
const XSAVE64: [u8; 4] = [0x48, 0x0f, 0xae, 0x27];
const XSAVEC64: [u8; 4] = [0x48, 0x0f, 0xc7, 0x27];

fn spr() -> XsaveLayout {
    XsaveLayout::from_cpuid(sapphire_rapids_cpuid)
}

fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

/// Random state for every component (a valid MXCSR), the header marking all in use.
fn random_region(seed: u64) -> Vec<u8> {
    let mut r = random_bytes(seed, AREA);
    r[MXCSR..MXCSR + 4].copy_from_slice(&MXCSR_DEFAULT.to_le_bytes());
    r[HEADER..EXTENDED].fill(0);
    set_u64(&mut r, HEADER, SPR_XCR0);
    r
}

/// Memory left as it was where the instruction writes nothing: random, with a zero header.
fn random_fill(seed: u64) -> Vec<u8> {
    let mut m = random_bytes(seed, SPAN);
    m[HEADER..EXTENDED].fill(0);
    m
}

/// A Sapphire Rapids vCPU with `region` as its XSAVE state, ready to run `code` on the area
/// at MEM_AT (holding `image`) with instruction mask `mask`.
fn setup(code: &[u8], region: Vec<u8>, image: &[u8], mask: u64) -> (FakeVcpu, GuestMemory) {
    let mut pt = PageTables::new();
    pt.identity(0x10_0000);
    let mem = pt.mem();
    mem.write_slice(code, GuestAddress(CODE_AT)).unwrap();
    mem.write_slice(image, GuestAddress(MEM_AT)).unwrap();
    let mut cpu = FakeVcpu {
        sregs: long_mode_sregs(pt.cr3()),
        layout: spr(),
        xcr0: SPR_XCR0,
        xsave: region,
        ..Default::default()
    };
    cpu.msrs.insert(MSR_IA32_XFD, 0);
    cpu.regs.rip = CODE_AT;
    cpu.regs.rdi = MEM_AT;
    cpu.regs.rax = mask & 0xffff_ffff;
    cpu.regs.rdx = mask >> 32;
    (cpu, mem)
}

fn memory(mem: &GuestMemory) -> Vec<u8> {
    let mut m = vec![0u8; SPAN];
    mem.read_slice(&mut m, GuestAddress(MEM_AT)).unwrap();
    m
}

/// Run to completion; the vCPU and guest memory after.
fn run(code: &[u8], region: Vec<u8>, image: &[u8], mask: u64) -> (FakeVcpu, Vec<u8>) {
    let (mut cpu, mem) = setup(code, region, image, mask);
    let out = emulate_at_rip(&mut cpu, &mem).unwrap();
    assert!(matches!(out, Outcome::Emulated(_)), "{out:?}");
    let after = memory(&mem);
    (cpu, after)
}

/// The error of an instruction that raises `e` (no IDT: it cannot be delivered).
fn assert_raises(cpu: &mut FakeVcpu, mem: &GuestMemory, e: Exception) {
    let err = emulate_at_rip(cpu, mem).unwrap_err().to_string();
    assert!(err.contains(&format!("{e:?}")), "{err}");
}

#[test]
fn xsave_writes_every_component_at_its_cpuid_offset() {
    let region = random_region(1);
    let fill = random_fill(2);
    let (_, mem) = run(&XSAVE64, region.clone(), &fill, u64::MAX);
    let l = spr();
    for (i, c) in l.extended(SPR_XCR0) {
        assert_eq!(mem[c.at(c.offset)], region[c.at(c.offset)], "component {i}");
    }
    assert_eq!(mem[2816..AREA], region[2816..AREA], "tile data");
    assert_eq!(mem[SSE_RANGE], region[SSE_RANGE]);
    assert_eq!(u64_at(&mem, HEADER), SPR_XCR0);
    assert_eq!(mem[AREA..], fill[AREA..], "nothing past the area");
}

#[test]
fn xsavec_packs_the_tile_state_and_xrstor_reads_it_back() {
    let region = random_region(3);
    let fill = random_fill(4);
    let (_, image) = run(&XSAVEC64, region.clone(), &fill, u64::MAX);
    assert_eq!(u64_at(&image, HEADER), SPR_XCR0);
    assert_eq!(u64_at(&image, HEADER + 8), SPR_XCR0 | COMPACTED);
    // TILECFG and TILEDATA are 64-byte aligned after PKRU, which ends at 2440.
    assert_eq!(image[2496..2560], region[2752..2816], "tile configuration");
    assert_eq!(image[2560..10752], region[2816..AREA], "tile data");
    assert_eq!(image[2432..2440], region[2688..2696], "PKRU");
    assert_eq!(
        image[10752..],
        fill[10752..],
        "nothing past the compacted area"
    );

    let mut empty = vec![0u8; AREA];
    set_u64(&mut empty, HEADER, LEGACY_COMPONENTS);
    let (cpu, _) = run(&XRSTOR64, empty, &image, u64::MAX);
    for (i, c) in spr().extended(SPR_XCR0) {
        assert_eq!(
            cpu.xsave[c.at(c.offset)],
            region[c.at(c.offset)],
            "component {i}"
        );
    }
    assert_eq!(cpu.xsave[SSE_RANGE], region[SSE_RANGE]);
    assert_eq!(cpu.xsave[MXCSR..MXCSR + 4], region[MXCSR..MXCSR + 4]);
    assert_eq!(u64_at(&cpu.xsave, HEADER), SPR_XCR0);
}

#[test]
fn xrstor_loads_or_initialises_tile_data() {
    let image = random_region(5);
    let (cpu, _) = run(&XRSTOR64, random_region(6), &image, u64::MAX);
    assert_eq!(cpu.xsave[2752..AREA], image[2752..AREA]);

    // XSTATE_BV without tile data: a mask naming it initialises it, and leaves AVX alone.
    let mut image = random_region(7);
    set_u64(&mut image, HEADER, SPR_XCR0 & !TILEDATA);
    let before = random_region(8);
    let (cpu, _) = run(&XRSTOR64, before.clone(), &image, TILEDATA | X87);
    assert!(cpu.xsave[2816..AREA].iter().all(|&b| b == 0));
    assert_eq!(cpu.xsave[576..832], before[576..832], "AVX untouched");
    assert_eq!(cpu.xsave[0..24], image[0..24], "x87 loaded");
}

#[test]
fn xfd_disabled_tile_data_raises_nm_on_load_and_saves_as_initial() {
    let disarm = |cpu: &mut FakeVcpu| {
        cpu.msrs.insert(MSR_IA32_XFD, TILEDATA);
    };
    // XRSTOR that would load tile data: #NM, IA32_XFD_ERR names it, nothing restored.
    let region = random_region(9);
    let (mut cpu, mem) = setup(&XRSTOR64, region.clone(), &random_region(10), u64::MAX);
    disarm(&mut cpu);
    assert_raises(&mut cpu, &mem, Exception::DeviceNotAvailable);
    assert_eq!(cpu.msrs.get(&MSR_IA32_XFD_ERR), Some(&TILEDATA));
    assert_eq!(cpu.xsave, region);

    // Tile data initialised instead of loaded: no fault, and the region marks it initial.
    let mut image = random_region(11);
    set_u64(&mut image, HEADER, SPR_XCR0 & !TILEDATA);
    let (mut cpu, mem) = setup(&XRSTOR64, region.clone(), &image, u64::MAX);
    disarm(&mut cpu);
    emulate_at_rip(&mut cpu, &mem).unwrap();
    assert_eq!(u64_at(&cpu.xsave, HEADER) & TILEDATA, 0);
    assert!(cpu.xsave[2816..AREA].iter().all(|&b| b == 0));
    assert_eq!(cpu.xsave[2752..2816], image[2752..2816], "TILECFG loaded");

    // XSAVE and XSAVEC treat it as initial.
    let fill = random_fill(12);
    for (code, tile_data) in [(XSAVE64, 2816..AREA), (XSAVEC64, 2560..10752)] {
        let (mut cpu, mem) = setup(&code, region.clone(), &fill, u64::MAX);
        disarm(&mut cpu);
        emulate_at_rip(&mut cpu, &mem).unwrap();
        let after = memory(&mem);
        assert_eq!(u64_at(&after, HEADER), SPR_XCR0 & !TILEDATA);
        if code == XSAVEC64 {
            assert_eq!(u64_at(&after, HEADER + 8), SPR_XCR0 | COMPACTED);
            assert_eq!(after[tile_data.clone()], fill[tile_data], "not written");
        } else {
            assert!(after[tile_data].iter().all(|&b| b == 0));
        }
    }
}

#[test]
fn short_regions_and_undescribed_components_are_refused_without_panicking() {
    // KVM's legacy 4096-byte region cannot hold AMX state: an emulation failure.
    let (mut cpu, mem) = setup(&XSAVE64, vec![0; 4096], &random_fill(13), u64::MAX);
    let err = emulate_at_rip(&mut cpu, &mem).unwrap_err();
    assert!(
        matches!(&err, EmulationError::Invalid { why, .. } if why.contains("4096 bytes")),
        "{err}"
    );
    // Without AMX in XCR0, 4096 bytes do.
    let (mut cpu, mem) = setup(&XSAVE64, vec![0; 4096], &random_fill(13), u64::MAX);
    cpu.xcr0 = SPR_XCR0 & !(TILECFG | TILEDATA);
    emulate_at_rip(&mut cpu, &mem).unwrap();

    // An XCR0 component the guest's CPUID does not describe.
    for code in [XSAVE64, XRSTOR64, XSAVEC64] {
        let (mut cpu, mem) = setup(&code, random_region(14), &random_region(15), u64::MAX);
        cpu.xcr0 = SPR_XCR0 | 1 << 19;
        let err = emulate_at_rip(&mut cpu, &mem).unwrap_err();
        assert!(
            matches!(&err, EmulationError::Invalid { why, .. } if why.contains("0x80000")),
            "{err}"
        );
    }
}

#[test]
fn xsavec_without_the_compacted_form_and_cr0_ts_fault() {
    let (mut cpu, mem) = setup(&XSAVEC64, random_region(16), &random_fill(17), u64::MAX);
    cpu.layout = XsaveLayout::from_cpuid(|leaf, sub| {
        let mut r = sapphire_rapids_cpuid(leaf, sub);
        if sub == 1 {
            r[0] &= !0b10;
        }
        r
    });
    assert_raises(&mut cpu, &mem, Exception::InvalidOpcode);

    let (mut cpu, mem) = setup(&XSAVE64, random_region(18), &random_fill(19), u64::MAX);
    cpu.sregs.cr0 |= CR0_TS;
    assert_raises(&mut cpu, &mem, Exception::DeviceNotAvailable);
}
