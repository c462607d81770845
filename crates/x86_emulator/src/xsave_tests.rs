//! The XSAVE family against the same instructions run natively in this process: random
//! states and memory images, restored/saved natively and by the emulator, then compared.
//!
//! Nothing assumes the host's features. The components exercised are those of the host's
//! XCR0 this process may use, less PKRU (it guards this process's own memory); buffers are
//! sized from CPUID leaf 0DH; the emulator gets the host's layout. Components the kernel
//! keeps disabled through XFD until asked (AMX tile data) are requested with
//! arch_prctl(ARCH_REQ_XCOMP_PERM) and left out when the kernel refuses, as their use would
//! end in SIGILL. AMX layouts on any host: `xsave_amx_tests.rs`.

use std::sync::OnceLock;

use super::*;
use crate::test_support::{long_mode_sregs, FakeVcpu, PageTables};
use crate::{emulate_at_rip, Exception, Outcome};
use vm_memory::{Bytes, GuestAddress};

const PKRU: u64 = 1 << 9;
/// AMX tile configuration: XRSTOR loads it as given only when its palette is valid.
const XTILECFG: u32 = 17;
const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
const CODE_AT: u64 = 0x8000;
const MEM_AT: u64 = 0x9000;
/// The tests' page tables map the first 1 MiB.
const MAPPED: u64 = 0x10_0000;

/// The host as the tests use it.
struct Host {
    layout: XsaveLayout,
    /// The host's XCR0, which the fake vCPU gets too.
    xcr0: u64,
    /// The components exercised.
    usable: u64,
    /// Size of every buffer: CPUID.(0DH,0).EBX (the standard format of XCR0's components),
    /// or the compacted format if that is larger, rounded up to 64.
    size: usize,
}

fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv(0) is allowed at CPL 3 once the OS enabled XSAVE (checked by `host`).
    unsafe { std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi) };
    u64::from(hi) << 32 | u64::from(lo)
}

/// The components of `xcr0` this process may use: XFD keeps the dynamically enabled ones
/// disabled until the process has permission, which is asked for here.
fn permitted(layout: &XsaveLayout, xcr0: u64) -> u64 {
    let dynamic = xcr0 & layout.xfd_capable();
    if dynamic == 0 {
        return xcr0;
    }
    for i in (0..64u64).filter(|i| dynamic & (1 << i) != 0) {
        // SAFETY: ARCH_REQ_XCOMP_PERM takes a component number and only changes which
        // components this process may use.
        unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, i) };
    }
    let mut perm: u64 = 0;
    // SAFETY: ARCH_GET_XCOMP_PERM writes one u64 at the address given, that of `perm`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_GET_XCOMP_PERM,
            &mut perm as *mut u64,
        )
    };
    if rc != 0 {
        return xcr0 & !dynamic;
    }
    xcr0 & !(dynamic & !perm)
}

/// None when the OS has not enabled XSAVE (no OSXSAVE).
fn host() -> Option<&'static Host> {
    static HOST: OnceLock<Option<Host>> = OnceLock::new();
    HOST.get_or_init(|| {
        if std::arch::x86_64::__cpuid(1).ecx & (1 << 27) == 0 {
            return None;
        }
        let layout = XsaveLayout::host();
        let xcr0 = xgetbv0();
        let ebx = std::arch::x86_64::__cpuid_count(0xd, 0).ebx as usize;
        let size = ebx
            .max(layout.standard_size(xcr0))
            .max(layout.compacted_size(xcr0))
            .next_multiple_of(64);
        assert!(
            MEM_AT + size as u64 <= MAPPED,
            "an XSAVE area of {size} bytes"
        );
        let usable = permitted(&layout, xcr0) & !PKRU;
        Some(Host {
            layout,
            xcr0,
            usable,
            size,
        })
    })
    .as_ref()
}

/// A zeroed buffer at a 64-byte aligned address, as XSAVE needs.
struct Area {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Area {
    fn new(len: usize) -> Self {
        let buf = vec![0u8; len + 63];
        let start = buf.as_ptr().align_offset(64);
        assert!(start < 64);
        Area { buf, start, len }
    }
    fn from_bytes(bytes: &[u8]) -> Self {
        let mut a = Area::new(bytes.len());
        a.bytes_mut().copy_from_slice(bytes);
        a
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

impl Clone for Area {
    fn clone(&self) -> Self {
        Area::from_bytes(self.bytes())
    }
}

#[derive(Clone, Copy)]
enum Op {
    Xrstor = 0,
    Xsave = 1,
    Xsavec = 2,
}

/// Run natively: save this thread's state, XRSTOR `before` (every usable component), run
/// `op` on `mem` with `mask`, XSAVE every usable component into `after`, and restore the
/// thread's state.
fn native(h: &Host, before: &Area, mem: &mut Area, mask: u64, op: Op, after: &mut Area) {
    for len in [before.len, mem.len, after.len] {
        assert_eq!(len, h.size);
    }
    let mut saved = Area::new(h.size);
    let all = h.usable;
    let (all_lo, all_hi) = (all as u32, (all >> 32) as u32);
    let mask = mask & all;
    let (lo, hi) = (mask as u32, (mask >> 32) as u32);
    // SAFETY: all areas are 64-byte aligned and h.size bytes, which holds the standard and
    // compacted formats of XCR0's components (CPUID.(0DH,0).EBX and the compacted size);
    // only usable components are requested (not PKRU, not those this process may not use);
    // every vector, mask, tile and x87 register is declared clobbered (clobber_abi), and the
    // thread's MXCSR and x87 control word come back with the final XRSTOR of `saved`.
    unsafe {
        std::arch::asm!(
            "mov eax, {all_lo:e}",
            "mov edx, {all_hi:e}",
            "xsave64 [{saved}]",
            "xrstor64 [{before}]",
            "mov eax, {lo:e}",
            "mov edx, {hi:e}",
            "cmp {op:e}, 0",
            "jne 2f",
            "xrstor64 [{mem}]",
            "jmp 4f",
            "2:",
            "cmp {op:e}, 1",
            "jne 3f",
            "xsave64 [{mem}]",
            "jmp 4f",
            "3:",
            "xsavec64 [{mem}]",
            "4:",
            "mov eax, {all_lo:e}",
            "mov edx, {all_hi:e}",
            "xsave64 [{after}]",
            "xrstor64 [{saved}]",
            saved = in(reg) saved.bytes_mut().as_mut_ptr(),
            before = in(reg) before.bytes().as_ptr(),
            mem = in(reg) mem.bytes_mut().as_mut_ptr(),
            after = in(reg) after.bytes_mut().as_mut_ptr(),
            all_lo = in(reg) all_lo,
            all_hi = in(reg) all_hi,
            lo = in(reg) lo,
            hi = in(reg) hi,
            op = in(reg) op as u32,
            out("eax") _,
            out("edx") _,
            clobber_abi("C"),
        );
    }
}

/// What the CPU makes of a standard-format region when it loads it, as KVM does with the
/// region the emulator returns: XRSTOR it, XSAVE it.
fn loaded(h: &Host, region: &[u8]) -> Area {
    let before = Area::from_bytes(region);
    let mut untouched = Area::new(h.size);
    let mut after = Area::new(h.size);
    native(h, &before, &mut untouched, 0, Op::Xrstor, &mut after);
    after
}

fn host_has_xsavec() -> bool {
    host().is_some_and(|h| h.layout.xsavec())
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, b: &mut [u8]) {
        for x in b {
            *x = self.next() as u8;
        }
    }
}

/// A valid AMX palette-1 configuration that uses every byte of the tile data: 8 tiles of
/// 16 rows of 64 bytes, start row 0.
fn full_tile_config(cfg: &mut [u8]) {
    cfg.fill(0);
    if cfg.len() < 64 {
        return;
    }
    cfg[0] = 1;
    for t in 0..8 {
        cfg[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
        cfg[48 + t] = 16;
    }
}

/// A valid standard-format image of random state for every usable component.
fn random_state(rng: &mut Rng, h: &Host) -> Area {
    let mut a = Area::new(h.size);
    let b = a.bytes_mut();
    // x87: FCW (valid bits), FSW (TOP and condition codes, no pending exception), FTW,
    // ST0-7 (10 bytes each); FOP/FIP/FDP stay 0.
    let fcw = (rng.next() as u16 & 0x0f3f) | 0x40;
    b[0..2].copy_from_slice(&fcw.to_le_bytes());
    let fsw = rng.next() as u16 & 0x7f00;
    b[2..4].copy_from_slice(&fsw.to_le_bytes());
    b[4] = rng.next() as u8;
    for st in 0..8 {
        rng.fill(&mut b[32 + st * 16..32 + st * 16 + 10]);
    }
    rng.fill(&mut b[SSE_RANGE]);
    let mxcsr = rng.next() as u32 & 0xffbf;
    b[MXCSR..MXCSR + 4].copy_from_slice(&mxcsr.to_le_bytes());
    for (i, c) in h.layout.extended(h.usable) {
        let slot = &mut b[c.at(c.offset)];
        rng.fill(slot);
        if i == XTILECFG {
            full_tile_config(slot);
        }
    }
    b[HEADER..HEADER + 8].copy_from_slice(&h.usable.to_le_bytes());
    a
}

/// Fail with the first differing offset instead of two dumps of kilobytes.
fn assert_same(left: &[u8], right: &[u8], what: &str) {
    assert_eq!(left.len(), right.len(), "{what}");
    if let Some(at) = left.iter().zip(right).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {at}: emulated {:02x?}, native {:02x?}",
            &left[at..(at + 8).min(left.len())],
            &right[at..(at + 8).min(right.len())]
        );
    }
}

/// The state a region describes: components its header marks unused as initial values.
fn effective(h: &Host, region: &[u8]) -> Vec<u8> {
    let x = h.usable;
    let mut r = region.to_vec();
    let bv = u64_at(&r, HEADER);
    if x & X87 != 0 && bv & X87 == 0 {
        for range in X87_RANGES {
            r[range].fill(0);
        }
        r[..2].copy_from_slice(&FCW_DEFAULT.to_le_bytes());
    }
    if x & SSE != 0 && bv & SSE == 0 {
        r[SSE_RANGE].fill(0);
    }
    let mut out = Vec::new();
    for range in X87_RANGES {
        out.extend_from_slice(&r[range]);
    }
    out.extend_from_slice(&r[MXCSR..MXCSR + 4]);
    out.extend_from_slice(&r[SSE_RANGE]);
    for (i, c) in h.layout.extended(x) {
        if bv & (1 << i) == 0 {
            r[c.at(c.offset)].fill(0);
        }
        out.extend_from_slice(&r[c.at(c.offset)]);
    }
    out
}

/// A fake vCPU of this host in 64-bit mode with `state` as its XSAVE region.
fn fake_vcpu(h: &Host, cr3: u64, state: &[u8], mask: u64, rdi: u64) -> FakeVcpu {
    let mut cpu = FakeVcpu {
        sregs: long_mode_sregs(cr3),
        xcr0: h.xcr0,
        layout: h.layout.clone(),
        xsave: state.to_vec(),
        ..Default::default()
    };
    cpu.msrs.insert(MSR_IA32_XFD, 0);
    cpu.regs.rip = CODE_AT;
    cpu.regs.rdi = rdi;
    cpu.regs.rax = mask & 0xffff_ffff;
    cpu.regs.rdx = mask >> 32;
    cpu
}

/// Run `code` (operand `(%rdi)`, RDI = MEM_AT) in the emulator on a vCPU whose state is
/// `state`, with `image` in guest memory; returns the vCPU's region and the memory after.
fn emulated(
    h: &Host,
    code: &[u8],
    state: &Area,
    image: &Area,
    mask: u64,
) -> (Outcome, Vec<u8>, Vec<u8>) {
    let mut pt = PageTables::new();
    pt.identity(MAPPED);
    let mem = pt.mem();
    mem.write_slice(code, GuestAddress(CODE_AT)).unwrap();
    mem.write_slice(image.bytes(), GuestAddress(MEM_AT))
        .unwrap();
    let mut cpu = fake_vcpu(h, pt.cr3(), state.bytes(), mask, MEM_AT);
    let out = emulate_at_rip(&mut cpu, &mem).unwrap();
    let mut after = vec![0u8; h.size];
    mem.read_slice(&mut after, GuestAddress(MEM_AT)).unwrap();
    (out, cpu.xsave, after)
}

const XRSTOR64: [u8; 4] = [0x48, 0x0f, 0xae, 0x2f];
const XSAVE64: [u8; 4] = [0x48, 0x0f, 0xae, 0x27];
const XSAVEC64: [u8; 4] = [0x48, 0x0f, 0xc7, 0x27];

/// Instruction masks: everything, each legacy component, AVX, the extended components
/// alone, and random ones (all within the usable components).
fn masks(x: u64, rng: &mut Rng) -> Vec<u64> {
    [
        u64::MAX,
        X87,
        SSE,
        AVX,
        SSE | AVX,
        X87 | SSE,
        !LEGACY_COMPONENTS,
        rng.next(),
        rng.next(),
    ]
    .iter()
    .map(|m| m & x)
    .collect()
}

#[test]
fn xrstor_standard_form_matches_native() {
    let Some(h) = host() else { return };
    let x = h.usable;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for round in 0..24 {
        let before = random_state(&mut rng, h);
        let mut image = random_state(&mut rng, h);
        let bv = rng.next() & x;
        image.bytes_mut()[HEADER..HEADER + 8].copy_from_slice(&bv.to_le_bytes());
        for mask in masks(x, &mut rng) {
            let mut native_mem = image.clone();
            let mut native_after = Area::new(h.size);
            native(
                h,
                &before,
                &mut native_mem,
                mask,
                Op::Xrstor,
                &mut native_after,
            );
            let (out, region, _) = emulated(h, &XRSTOR64, &before, &image, mask);
            assert_eq!(out, Outcome::Emulated("xrstor64".into()));
            assert_same(
                &effective(h, loaded(h, &region).bytes()),
                &effective(h, native_after.bytes()),
                &format!("round {round} xstate_bv {bv:#x} mask {mask:#x}"),
            );
        }
    }
}

#[test]
fn xrstor_compacted_form_matches_native() {
    let Some(h) = host().filter(|_| host_has_xsavec()) else {
        return;
    };
    let x = h.usable;
    let mut rng = Rng(0xfeed_f00d_1234_0001);
    for round in 0..16 {
        let before = random_state(&mut rng, h);
        // A compacted image written natively by XSAVEC from random state.
        let state = random_state(&mut rng, h);
        let save_mask = rng.next() & x | X87;
        let mut image = Area::new(h.size);
        let mut scratch = Area::new(h.size);
        native(h, &state, &mut image, save_mask, Op::Xsavec, &mut scratch);
        for mask in masks(x, &mut rng) {
            let mut native_mem = image.clone();
            let mut native_after = Area::new(h.size);
            native(
                h,
                &before,
                &mut native_mem,
                mask,
                Op::Xrstor,
                &mut native_after,
            );
            let (_, region, _) = emulated(h, &XRSTOR64, &before, &image, mask);
            assert_same(
                &effective(h, loaded(h, &region).bytes()),
                &effective(h, native_after.bytes()),
                &format!("round {round} saved with {save_mask:#x}, restored with {mask:#x}"),
            );
        }
    }
}

#[test]
fn xsave_and_xsavec_write_what_native_writes() {
    let Some(h) = host() else { return };
    let x = h.usable;
    let mut rng = Rng(0x0bad_cafe_dead_beef);
    let ops: &[(Op, &[u8; 4])] = if host_has_xsavec() {
        &[(Op::Xsave, &XSAVE64), (Op::Xsavec, &XSAVEC64)]
    } else {
        &[(Op::Xsave, &XSAVE64)]
    };
    for round in 0..16 {
        let state = random_state(&mut rng, h);
        // KVM reports the state as native XSAVE of everything would.
        let mut region = Area::new(h.size);
        let mut scratch = Area::new(h.size);
        native(h, &state, &mut region, x, Op::Xsave, &mut scratch);
        let mut fill = Area::new(h.size);
        rng.fill(fill.bytes_mut());
        fill.bytes_mut()[HEADER..EXTENDED].fill(0);
        for &(op, code) in ops {
            for mask in masks(x, &mut rng) {
                let mut native_mem = fill.clone();
                native(h, &state, &mut native_mem, mask, op, &mut scratch);
                let (_, _, mem) = emulated(h, code, &region, &fill, mask);
                assert_same(
                    &mem,
                    native_mem.bytes(),
                    &format!("round {round} op {} mask {mask:#x}", op as u32),
                );
            }
        }
    }
}

#[test]
fn xrstor_with_unknown_header_bits_or_misalignment_raises_gp() {
    let Some(h) = host() else { return };
    let mut rng = Rng(7);
    let state = random_state(&mut rng, h);
    let mut image = random_state(&mut rng, h);
    image.bytes_mut()[HEADER + 8] = 1; // XCOMP_BV bit 0 without bit 63
    let mut pt = PageTables::new();
    pt.identity(MAPPED);
    let mem = pt.mem();
    mem.write_slice(&XRSTOR64, GuestAddress(CODE_AT)).unwrap();
    mem.write_slice(image.bytes(), GuestAddress(MEM_AT))
        .unwrap();
    for rdi in [MEM_AT, MEM_AT + 16] {
        let mut cpu = fake_vcpu(h, pt.cr3(), state.bytes(), u64::MAX, rdi);
        // No IDT: the #GP cannot be delivered, and the error names it.
        let err = emulate_at_rip(&mut cpu, &mem).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{:?}", Exception::GeneralProtection(0))),
            "{err}"
        );
        assert_eq!(cpu.xsave, state.bytes(), "nothing restored");
    }
}
