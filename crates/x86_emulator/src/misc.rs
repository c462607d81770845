//! Instructions whose effect vessel can give without touching guest state beyond registers:
//! fences, prefetches and cache-line flushes (the exit to vessel already orders memory more
//! strongly than any of them), `rdtscp` (guest TSC and TSC_AUX through KVM's MSRs),
//! `rdrand`/`rdseed` (the host's), `rdpru` (#UD, as KVM never offers it).

use iced_x86::Mnemonic;

use crate::decode::Ctx;
use crate::guest_virt::Access;
use crate::{Exception, Failure};

const MSR_TSC: u32 = 0x10;
const MSR_TSC_AUX: u32 = 0xc000_0103;
const CR4_TSD: u64 = 1 << 2;
const RFLAGS_CF: u64 = 1;
const ARITH_FLAGS: u64 = 0x8d5;

/// Fences, prefetches, cache-line flushes and write-backs: nothing to do in a VM whose
/// memory is coherent host memory, once a flushed line is known to be mapped (flushes fault
/// like reads; prefetches never fault).
pub fn ordering_no_op(ctx: &mut Ctx) -> Result<(), Failure> {
    let flush = matches!(
        ctx.insn.mnemonic(),
        Mnemonic::Clflush | Mnemonic::Clflushopt | Mnemonic::Clwb
    );
    if flush {
        let addr = ctx.memory_address()?;
        ctx.virt.translate(addr, Access::Read, ctx.privilege())?;
    }
    ctx.advance();
    Ok(())
}

/// `rdtscp`: EDX:EAX = guest TSC, ECX = TSC_AUX.
pub fn rdtscp(ctx: &mut Ctx) -> Result<(), Failure> {
    if ctx.sregs.cr4 & CR4_TSD != 0 && ctx.cpl() != 0 {
        return Err(Exception::GeneralProtection(0).into());
    }
    let tsc = ctx.vcpu.msr(MSR_TSC)?;
    let aux = ctx.vcpu.msr(MSR_TSC_AUX)?;
    ctx.regs.rax = tsc & 0xffff_ffff;
    ctx.regs.rdx = tsc >> 32;
    ctx.regs.rcx = aux & 0xffff_ffff;
    ctx.advance();
    Ok(())
}

fn host_random(seed: bool) -> Option<u64> {
    for _ in 0..100 {
        let (value, ok): (u64, u8);
        // SAFETY: rdrand/rdseed only write the output register and CF; callers reach here
        // only for a guest that executed the instruction on this very CPU, so it exists.
        unsafe {
            if seed {
                std::arch::asm!("rdseed {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok);
            } else {
                std::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok);
            }
        }
        if ok != 0 {
            return Some(value);
        }
    }
    None
}

/// `rdrand r` / `rdseed r`: the host's random number, CF set; CF clear when the host's
/// generator has none to give, as the instruction does.
pub fn random(ctx: &mut Ctx) -> Result<(), Failure> {
    let dest = ctx.insn.op0_register();
    let value = host_random(ctx.insn.mnemonic() == Mnemonic::Rdseed);
    ctx.set_gpr(dest, value.unwrap_or(0))?;
    ctx.regs.rflags &= !ARITH_FLAGS;
    if value.is_some() {
        ctx.regs.rflags |= RFLAGS_CF;
    }
    ctx.advance();
    Ok(())
}

/// `rdpru`: KVM never exposes RDPRU to a guest (CPUID 0x80000008 EBX[4] is not in
/// KVM_GET_SUPPORTED_CPUID), and on hardware the instruction then raises #UD; a nested
/// KVM that gives up on it gets the same result from vessel.
pub fn rdpru(_ctx: &mut Ctx) -> Result<(), Failure> {
    Err(Exception::InvalidOpcode.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{long_mode_sregs, FakeVcpu, PageTables};
    use crate::{emulate_at_rip, Outcome};
    use vm_memory::{Bytes, GuestAddress};

    fn run(code: &[u8], setup: impl FnOnce(&mut FakeVcpu)) -> (FakeVcpu, Outcome) {
        let mut pt = PageTables::new();
        pt.identity(0x10_0000);
        let mem = pt.mem();
        mem.write_slice(code, GuestAddress(0x8000)).unwrap();
        let mut cpu = FakeVcpu {
            sregs: long_mode_sregs(pt.cr3()),
            ..Default::default()
        };
        cpu.regs.rip = 0x8000;
        cpu.regs.rdi = 0x9000;
        setup(&mut cpu);
        let out = emulate_at_rip(&mut cpu, &mem).unwrap();
        assert_eq!(cpu.regs.rip, 0x8000 + code.len() as u64);
        (cpu, out)
    }

    #[test]
    fn fences_prefetches_and_flushes_only_advance_rip() {
        let codes: [&[u8]; 6] = [
            &[0x0f, 0xae, 0xe8],       // lfence
            &[0x0f, 0xae, 0xf0],       // mfence
            &[0x0f, 0xae, 0xf8],       // sfence
            &[0x0f, 0x0d, 0x0f],       // prefetchw (%rdi)
            &[0x0f, 0xae, 0x3f],       // clflush (%rdi)
            &[0x66, 0x0f, 0xae, 0x37], // clwb (%rdi)
        ];
        for code in codes {
            let (cpu, _) = run(code, |c| c.regs.rax = 5);
            assert_eq!(cpu.regs.rax, 5);
        }
    }

    #[test]
    fn clflush_of_an_unmapped_line_faults() {
        let mut pt = PageTables::new();
        pt.identity(0x10_0000);
        let mem = pt.mem();
        mem.write_slice(&[0x0f, 0xae, 0x3f], GuestAddress(0x8000))
            .unwrap();
        let mut cpu = FakeVcpu {
            sregs: long_mode_sregs(pt.cr3()),
            ..Default::default()
        };
        cpu.regs.rip = 0x8000;
        cpu.regs.rdi = 0x4000_0000;
        let err = emulate_at_rip(&mut cpu, &mem).unwrap_err().to_string();
        assert!(err.contains("PageFault"), "{err}");
    }

    #[test]
    fn rdtscp_reads_tsc_and_aux() {
        let (cpu, out) = run(&[0x0f, 0x01, 0xf9], |c| {
            c.msrs.insert(MSR_TSC, 0x1_2345_6789);
            c.msrs.insert(MSR_TSC_AUX, 2);
            c.regs.rcx = u64::MAX;
        });
        assert_eq!(out, Outcome::Emulated("rdtscp".into()));
        assert_eq!(
            (cpu.regs.rax, cpu.regs.rdx, cpu.regs.rcx),
            (0x2345_6789, 1, 2)
        );
    }

    #[test]
    fn rdrand_sets_cf_with_a_value() {
        if std::arch::x86_64::__cpuid(1).ecx & (1 << 30) == 0 {
            return;
        }
        // rdrand %rax, twice: two values, CF set.
        let (a, _) = run(&[0x48, 0x0f, 0xc7, 0xf0], |c| c.regs.rflags = 2);
        let (b, _) = run(&[0x48, 0x0f, 0xc7, 0xf0], |c| c.regs.rflags = 2);
        assert_eq!(a.regs.rflags & RFLAGS_CF, RFLAGS_CF);
        assert_ne!(a.regs.rax, b.regs.rax);
    }

    #[test]
    fn rdpru_raises_invalid_opcode() {
        let mut pt = PageTables::new();
        pt.identity(0x10_0000);
        let mem = pt.mem();
        mem.write_slice(&[0x0f, 0x01, 0xfd], GuestAddress(0x8000))
            .unwrap();
        let mut cpu = FakeVcpu {
            sregs: long_mode_sregs(pt.cr3()),
            ..Default::default()
        };
        cpu.regs.rip = 0x8000;
        // The fake vCPU has an empty IDT: delivering the #UD faults on vector 6's gate.
        let err = emulate_at_rip(&mut cpu, &mem).unwrap_err().to_string();
        assert!(
            err.contains("rdpru") && err.contains("while delivering InvalidOpcode"),
            "{err}"
        );
    }
}
