//! The XSAVE family against the same instructions run natively in this process: random
//! states and memory images, restored/saved natively and by the emulator, then compared.

use super::*;
use crate::emulation::test_support::{long_mode_sregs, FakeVcpu, PageTables};
use crate::emulation::{emulate_at_rip, Exception, Outcome};
use vm_memory::{Bytes, GuestAddress};

#[repr(C, align(64))]
#[derive(Clone)]
struct Area([u8; XSAVE_REGION_SIZE]);

const PKRU: u64 = 1 << 9;

fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv(0) is allowed at CPL 3 when the OS enabled XSAVE (checked by callers).
    unsafe { std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi) };
    u64::from(hi) << 32 | u64::from(lo)
}

fn host_has_xsave() -> bool {
    let l1 = std::arch::x86_64::__cpuid(1);
    l1.ecx & (1 << 27) != 0
}

fn host_has_xsavec() -> bool {
    let d1 = std::arch::x86_64::__cpuid_count(0xd, 1);
    d1.eax & 2 != 0
}

/// Run natively: save this thread's state, XRSTOR `before` (every component), run `op`
/// (0 xrstor, 1 xsave, 2 xsavec) on `mem` with `mask`, XSAVE everything into `after`, and
/// restore the thread's state.
fn native(before: &Area, mem: &mut Area, mask: u64, op: u32, after: &mut Area) {
    let mut saved = Area([0; XSAVE_REGION_SIZE]);
    let all = xcr0() & !PKRU;
    let (all_lo, all_hi) = (all as u32, (all >> 32) as u32);
    let (lo, hi) = (mask as u32, (mask >> 32) as u32);
    // SAFETY: all areas are 64-byte aligned 4 KiB buffers, big enough for the standard and
    // compacted layouts of this CPU (checked by the callers through image_size); every vector,
    // mask and x87 register is declared clobbered (clobber_abi), and the thread's MXCSR and
    // x87 control word come back with the final XRSTOR of `saved`.
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
            saved = in(reg) saved.0.as_mut_ptr(),
            before = in(reg) before.0.as_ptr(),
            mem = in(reg) mem.0.as_mut_ptr(),
            after = in(reg) after.0.as_mut_ptr(),
            all_lo = in(reg) all_lo,
            all_hi = in(reg) all_hi,
            lo = in(reg) lo,
            hi = in(reg) hi,
            op = in(reg) op,
            out("eax") _,
            out("edx") _,
            clobber_abi("C"),
        );
    }
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

/// A valid standard-layout image of random state for every component of `xcr0`.
fn random_state(rng: &mut Rng, xcr0: u64) -> Area {
    let mut a = Area([0; XSAVE_REGION_SIZE]);
    let b = &mut a.0;
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
    rng.fill(&mut b[SSE_RANGE.0..SSE_RANGE.1]);
    let mxcsr = rng.next() as u32 & 0xffbf;
    b[MXCSR..MXCSR + 4].copy_from_slice(&mxcsr.to_le_bytes());
    for i in 2..63 {
        if xcr0 & (1 << i) != 0 {
            let (off, size, _) = component(i);
            rng.fill(&mut b[off..off + size]);
        }
    }
    b[HEADER..HEADER + 8].copy_from_slice(&xcr0.to_le_bytes());
    a
}

/// Fail with the first differing offset instead of two 4 KiB dumps.
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
fn effective(region: &[u8], xcr0: u64) -> Vec<u8> {
    let mut r: XsaveRegion = [0; XSAVE_REGION_SIZE];
    r.copy_from_slice(&region[..XSAVE_REGION_SIZE]);
    let bv = u64_at(&r, HEADER);
    for i in 0..63 {
        if xcr0 & (1 << i) != 0 && bv & (1 << i) == 0 {
            init_component(&mut r, i);
        }
    }
    let mut out = Vec::new();
    for (a, b) in X87_RANGES {
        out.extend_from_slice(&r[a..b]);
    }
    out.extend_from_slice(&r[MXCSR..MXCSR + 4]);
    out.extend_from_slice(&r[SSE_RANGE.0..SSE_RANGE.1]);
    for i in 2..63 {
        if xcr0 & (1 << i) != 0 {
            let (off, size, _) = component(i);
            out.extend_from_slice(&r[off..off + size]);
        }
    }
    out
}

const MEM_AT: u64 = 0x9000;

/// Run `code` (operand `(%rdi)`, RDI = MEM_AT) in the emulator on a vCPU whose state is
/// `state`, with `image` in guest memory; returns the vCPU's region and the memory after.
fn emulated(code: &[u8], state: &Area, image: &Area, mask: u64) -> (Outcome, XsaveRegion, Vec<u8>) {
    let mut pt = PageTables::new();
    pt.identity(0x10_0000);
    let mem = pt.mem();
    mem.write_slice(code, GuestAddress(0x8000)).unwrap();
    mem.write_slice(&image.0, GuestAddress(MEM_AT)).unwrap();
    let mut cpu = FakeVcpu {
        sregs: long_mode_sregs(pt.cr3()),
        xcr0: xcr0(),
        ..Default::default()
    };
    cpu.xsave = state.0;
    cpu.regs.rip = 0x8000;
    cpu.regs.rdi = MEM_AT;
    cpu.regs.rax = mask & 0xffff_ffff;
    cpu.regs.rdx = mask >> 32;
    let out = emulate_at_rip(&mut cpu, &mem).unwrap();
    let mut after = vec![0u8; XSAVE_REGION_SIZE];
    mem.read_slice(&mut after, GuestAddress(MEM_AT)).unwrap();
    (out, cpu.xsave, after)
}

const XRSTOR64: [u8; 4] = [0x48, 0x0f, 0xae, 0x2f];
const XSAVE64: [u8; 4] = [0x48, 0x0f, 0xae, 0x27];
const XSAVEC64: [u8; 4] = [0x48, 0x0f, 0xc7, 0x27];

fn masks(xcr0: u64, rng: &mut Rng) -> Vec<u64> {
    vec![
        xcr0,
        1,
        2,
        4 & xcr0,
        6 & xcr0,
        3,
        rng.next() & xcr0,
        rng.next() & xcr0,
    ]
}

#[test]
fn xrstor_standard_form_matches_native() {
    if !host_has_xsave() {
        return;
    }
    let x = xcr0() & !PKRU;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for round in 0..24 {
        let before = random_state(&mut rng, x);
        let mut image = random_state(&mut rng, x);
        let bv = rng.next() & x;
        image.0[HEADER..HEADER + 8].copy_from_slice(&bv.to_le_bytes());
        for mask in masks(x, &mut rng) {
            let mut native_mem = image.clone();
            let mut native_after = Area([0; XSAVE_REGION_SIZE]);
            native(&before, &mut native_mem, mask, 0, &mut native_after);
            let (out, region, _) = emulated(&XRSTOR64, &before, &image, mask);
            assert_eq!(out, Outcome::Emulated("xrstor64".into()));
            assert_same(
                &effective(&region, x),
                &effective(&native_after.0, x),
                &format!("round {round} xstate_bv {bv:#x} mask {mask:#x}"),
            );
        }
    }
}

#[test]
fn xrstor_compacted_form_matches_native() {
    if !host_has_xsave() || !host_has_xsavec() {
        return;
    }
    let x = xcr0() & !PKRU;
    let mut rng = Rng(0xfeed_f00d_1234_0001);
    for round in 0..16 {
        let before = random_state(&mut rng, x);
        // A compacted image written natively by XSAVEC from random state.
        let state = random_state(&mut rng, x);
        let save_mask = rng.next() & x | 1;
        let mut image = Area([0; XSAVE_REGION_SIZE]);
        let mut scratch = Area([0; XSAVE_REGION_SIZE]);
        native(&state, &mut image, save_mask, 2, &mut scratch);
        for mask in masks(x, &mut rng) {
            let mut native_mem = image.clone();
            let mut native_after = Area([0; XSAVE_REGION_SIZE]);
            native(&before, &mut native_mem, mask, 0, &mut native_after);
            let (_, region, _) = emulated(&XRSTOR64, &before, &image, mask);
            assert_same(
                &effective(&region, x),
                &effective(&native_after.0, x),
                &format!("round {round} saved with {save_mask:#x}, restored with {mask:#x}"),
            );
        }
    }
}

#[test]
fn xsave_and_xsavec_write_what_native_writes() {
    if !host_has_xsave() {
        return;
    }
    let x = xcr0() & !PKRU;
    let mut rng = Rng(0x0bad_cafe_dead_beef);
    let ops: &[(u32, &[u8; 4])] = if host_has_xsavec() {
        &[(1, &XSAVE64), (2, &XSAVEC64)]
    } else {
        &[(1, &XSAVE64)]
    };
    for round in 0..16 {
        let state = random_state(&mut rng, x);
        // KVM reports the state as native XSAVE of everything would.
        let mut region = Area([0; XSAVE_REGION_SIZE]);
        let mut scratch = Area([0; XSAVE_REGION_SIZE]);
        native(&state, &mut region, x, 1, &mut scratch);
        let mut fill = Area([0; XSAVE_REGION_SIZE]);
        rng.fill(&mut fill.0);
        fill.0[HEADER..EXTENDED].fill(0);
        for &(op, code) in ops {
            for mask in masks(x, &mut rng) {
                let mut native_mem = fill.clone();
                native(&state, &mut native_mem, mask, op, &mut scratch);
                let (_, _, mem) = emulated(code, &region, &fill, mask);
                let size = image_size(x, false);
                assert_same(
                    &mem[..size],
                    &native_mem.0[..size],
                    &format!("round {round} op {op} mask {mask:#x}"),
                );
            }
        }
    }
}

#[test]
fn xrstor_with_unknown_header_bits_or_misalignment_raises_gp() {
    if !host_has_xsave() {
        return;
    }
    let x = xcr0() & !PKRU;
    let mut rng = Rng(7);
    let state = random_state(&mut rng, x);
    let mut image = random_state(&mut rng, x);
    image.0[HEADER + 8] = 1; // XCOMP_BV bit 0 without bit 63
    let mut pt = PageTables::new();
    pt.identity(0x10_0000);
    let mem = pt.mem();
    mem.write_slice(&XRSTOR64, GuestAddress(0x8000)).unwrap();
    mem.write_slice(&image.0, GuestAddress(MEM_AT)).unwrap();
    for rdi in [MEM_AT, MEM_AT + 16] {
        let mut cpu = FakeVcpu {
            sregs: long_mode_sregs(pt.cr3()),
            xcr0: x,
            ..Default::default()
        };
        cpu.xsave = state.0;
        cpu.regs.rip = 0x8000;
        cpu.regs.rdi = rdi;
        cpu.regs.rax = u64::MAX;
        // No IDT: the #GP cannot be delivered, and the error names it.
        let err = emulate_at_rip(&mut cpu, &mem).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{:?}", Exception::GeneralProtection(0))),
            "{err}"
        );
        assert_eq!(cpu.xsave, state.0, "nothing restored");
    }
}
