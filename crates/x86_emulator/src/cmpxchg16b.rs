//! `lock cmpxchg16b m128` (SLUB's double-word cmpxchg), done atomically on guest memory
//! through vessel's mapping with the host's own `lock cmpxchg16b`.

use crate::decode::Ctx;
use crate::guest_virt::Access;
use crate::{Exception, Failure};

const RFLAGS_ZF: u64 = 1 << 6;

/// Compare RDX:RAX with the 16 bytes at `ptr`; if equal store RCX:RBX there, else load them
/// into RDX:RAX. Returns whether they were equal.
///
/// # Safety
/// `ptr` must be 16-byte aligned and valid for reads and writes of 16 bytes.
pub unsafe fn host_cmpxchg16b(
    ptr: *mut u8,
    rax: &mut u64,
    rdx: &mut u64,
    rbx: u64,
    rcx: u64,
) -> bool {
    let equal: u8;
    // SAFETY: the caller guarantees `ptr` is aligned and valid; cmpxchg16b touches exactly
    // those 16 bytes, and rbx is saved/restored around the instruction (LLVM reserves it).
    unsafe {
        std::arch::asm!(
            "xchg {rbx_tmp}, rbx",
            "lock cmpxchg16b [{ptr}]",
            "sete {eq}",
            "mov rbx, {rbx_tmp}",
            ptr = in(reg) ptr,
            rbx_tmp = inout(reg) rbx => _,
            eq = out(reg_byte) equal,
            inout("rax") *rax,
            inout("rdx") *rdx,
            in("rcx") rcx,
            options(nostack),
        );
    }
    equal != 0
}

pub fn cmpxchg16b(ctx: &mut Ctx) -> Result<(), Failure> {
    if !ctx.long_mode() {
        return Err(Exception::InvalidOpcode.into());
    }
    let linear = ctx.memory_address()?;
    if linear % 16 != 0 {
        return Err(Exception::GeneralProtection(0).into());
    }
    // The whole operand is in one page (16-byte aligned); a write access, as the CPU makes
    // one whether or not the comparison succeeds.
    let ptr = ctx
        .virt
        .host_range(linear, 16, Access::Write, ctx.privilege())?;
    let (mut rax, mut rdx) = (ctx.regs.rax, ctx.regs.rdx);
    // SAFETY: `ptr` maps 16 bytes of guest RAM inside one page of the VM's mapping (checked
    // by host_range), 16-byte aligned because the linear address is and pages are.
    let equal = unsafe { host_cmpxchg16b(ptr, &mut rax, &mut rdx, ctx.regs.rbx, ctx.regs.rcx) };
    ctx.regs.rax = rax;
    ctx.regs.rdx = rdx;
    if equal {
        ctx.regs.rflags |= RFLAGS_ZF;
    } else {
        ctx.regs.rflags &= !RFLAGS_ZF;
    }
    ctx.advance();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{long_mode_sregs, FakeVcpu, PageTables};
    use crate::{emulate_at_rip, Exception, Outcome};
    use vm_memory::{Bytes, GuestAddress};

    /// `lock cmpxchg16b 0x20(%rbp)`, the instruction SLUB stopped on.
    const CODE: [u8; 6] = [0xf0, 0x48, 0x0f, 0xc7, 0x4d, 0x20];

    fn native(mem: [u64; 2], rax: u64, rdx: u64, rbx: u64, rcx: u64) -> ([u64; 2], u64, u64, bool) {
        #[repr(align(16))]
        struct Aligned([u64; 2]);
        let mut m = Aligned(mem);
        let (mut a, mut d) = (rax, rdx);
        // SAFETY: `m` is a 16-byte aligned local of 16 bytes.
        let eq = unsafe { host_cmpxchg16b(m.0.as_mut_ptr().cast(), &mut a, &mut d, rbx, rcx) };
        (m.0, a, d, eq)
    }

    fn emulated(
        mem_val: [u64; 2],
        rax: u64,
        rdx: u64,
        rbx: u64,
        rcx: u64,
    ) -> ([u64; 2], u64, u64, bool) {
        let mut pt = PageTables::new();
        pt.identity(0x10_0000);
        let mem = pt.mem();
        mem.write_slice(&CODE, GuestAddress(0x8000)).unwrap();
        mem.write_obj(mem_val[0], GuestAddress(0x9020)).unwrap();
        mem.write_obj(mem_val[1], GuestAddress(0x9028)).unwrap();
        let mut cpu = FakeVcpu {
            sregs: long_mode_sregs(pt.cr3()),
            ..Default::default()
        };
        cpu.regs.rip = 0x8000;
        cpu.regs.rbp = 0x9000;
        cpu.regs.rflags = 2;
        (cpu.regs.rax, cpu.regs.rdx, cpu.regs.rbx, cpu.regs.rcx) = (rax, rdx, rbx, rcx);
        assert_eq!(
            emulate_at_rip(&mut cpu, &mem).unwrap(),
            Outcome::Emulated("cmpxchg16b".into())
        );
        assert_eq!(cpu.regs.rip, 0x8006);
        let out = [
            mem.read_obj(GuestAddress(0x9020)).unwrap(),
            mem.read_obj(GuestAddress(0x9028)).unwrap(),
        ];
        (
            out,
            cpu.regs.rax,
            cpu.regs.rdx,
            cpu.regs.rflags & RFLAGS_ZF != 0,
        )
    }

    #[test]
    fn matches_the_native_instruction_on_success_and_on_failure() {
        let cases = [
            ([1, 2], 1, 2, 7, 8),
            ([1, 2], 1, 3, 7, 8),
            ([u64::MAX, 0], u64::MAX, 0, 0, u64::MAX),
            ([5, 6], 6, 5, 0, 0),
        ];
        for (m, a, d, b, c) in cases {
            assert_eq!(
                emulated(m, a, d, b, c),
                native(m, a, d, b, c),
                "case {m:?} {a} {d}"
            );
        }
    }

    #[test]
    fn misaligned_operand_raises_gp() {
        let mut pt = PageTables::new();
        pt.identity(0x10_0000);
        let mem = pt.mem();
        mem.write_slice(&CODE, GuestAddress(0x8000)).unwrap();
        // IDT with no gates: delivering #GP fails, which reports the nested fault.
        let mut cpu = FakeVcpu {
            sregs: long_mode_sregs(pt.cr3()),
            ..Default::default()
        };
        cpu.regs.rip = 0x8000;
        cpu.regs.rbp = 0x9008;
        let err = emulate_at_rip(&mut cpu, &mem).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{:?}", Exception::GeneralProtection(0))),
            "{err}"
        );
    }
}
