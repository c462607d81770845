//! System instructions KVM's emulator lacks: `swapgs`, `clac`/`stac`, `rdpid`, and the
//! FSGSBASE instructions.

use iced_x86::Mnemonic;

use crate::decode::Ctx;
use crate::{Exception, Failure};

const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_TSC_AUX: u32 = 0xc000_0103;
const RFLAGS_AC: u64 = 1 << 18;
const CR4_FSGSBASE: u64 = 1 << 16;

/// `clac` / `stac`: clear or set RFLAGS.AC (CPL 0 only).
pub fn clac_stac(ctx: &mut Ctx) -> Result<(), Failure> {
    if ctx.cpl() != 0 {
        return Err(Exception::InvalidOpcode.into());
    }
    if ctx.insn.mnemonic() == Mnemonic::Stac {
        ctx.regs.rflags |= RFLAGS_AC;
    } else {
        ctx.regs.rflags &= !RFLAGS_AC;
    }
    ctx.advance();
    Ok(())
}

/// `rdpid r`: IA32_TSC_AUX into a register.
pub fn rdpid(ctx: &mut Ctx) -> Result<(), Failure> {
    let aux = ctx.vcpu.msr(MSR_TSC_AUX)?;
    ctx.set_gpr(ctx.insn.op0_register(), aux & 0xffff_ffff)?;
    ctx.advance();
    Ok(())
}

/// `rdfsbase`/`rdgsbase`/`wrfsbase`/`wrgsbase` (64-bit mode, CR4.FSGSBASE).
pub fn fsgsbase(ctx: &mut Ctx) -> Result<(), Failure> {
    if !ctx.long_mode() || ctx.sregs.cr4 & CR4_FSGSBASE == 0 {
        return Err(Exception::InvalidOpcode.into());
    }
    let reg = ctx.insn.op0_register();
    match ctx.insn.mnemonic() {
        Mnemonic::Rdfsbase => ctx.set_gpr(reg, ctx.sregs.fs.base)?,
        Mnemonic::Rdgsbase => ctx.set_gpr(reg, ctx.sregs.gs.base)?,
        m => {
            let value = ctx.source_operand(0, reg.size())?;
            if ((value as i64) << 16 >> 16) as u64 != value {
                return Err(Exception::GeneralProtection(0).into());
            }
            if m == Mnemonic::Wrfsbase {
                ctx.sregs.fs.base = value;
            } else {
                ctx.sregs.gs.base = value;
            }
            ctx.sregs_dirty = true;
        }
    }
    ctx.advance();
    Ok(())
}

/// `swapgs`: exchange GS.base with IA32_KERNEL_GS_BASE (64-bit mode, CPL 0).
pub fn swapgs(ctx: &mut Ctx) -> Result<(), Failure> {
    if !ctx.long_mode() {
        return Err(Exception::InvalidOpcode.into());
    }
    if ctx.cpl() != 0 {
        return Err(Exception::GeneralProtection(0).into());
    }
    let kernel_gs = ctx.vcpu.msr(MSR_KERNEL_GS_BASE)?;
    ctx.vcpu.set_msr(MSR_KERNEL_GS_BASE, ctx.sregs.gs.base)?;
    ctx.sregs.gs.base = kernel_gs;
    ctx.sregs_dirty = true;
    ctx.advance();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{long_mode_sregs, FakeVcpu, PageTables};
    use crate::{emulate_at_rip, Outcome};
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn swapgs_exchanges_gs_base_with_kernel_gs_base() {
        let mut pt = PageTables::new();
        pt.identity(0x10_0000);
        let mem = pt.mem();
        mem.write_slice(&[0x0f, 0x01, 0xf8], GuestAddress(0x8000))
            .unwrap();
        let mut cpu = FakeVcpu {
            sregs: long_mode_sregs(pt.cr3()),
            ..Default::default()
        };
        cpu.regs.rip = 0x8000;
        cpu.sregs.gs.base = 0x1111;
        cpu.msrs.insert(MSR_KERNEL_GS_BASE, 0xffff_8880_0000_2222);
        assert_eq!(
            emulate_at_rip(&mut cpu, &mem).unwrap(),
            Outcome::Emulated("swapgs".into())
        );
        assert_eq!(cpu.sregs.gs.base, 0xffff_8880_0000_2222);
        assert_eq!(cpu.msrs[&MSR_KERNEL_GS_BASE], 0x1111);
        assert_eq!(cpu.regs.rip, 0x8003);
    }

    fn run(code: &[u8], setup: impl FnOnce(&mut FakeVcpu)) -> FakeVcpu {
        let mut pt = PageTables::new();
        pt.identity(0x10_0000);
        let mem = pt.mem();
        mem.write_slice(code, GuestAddress(0x8000)).unwrap();
        let mut cpu = FakeVcpu {
            sregs: long_mode_sregs(pt.cr3()),
            ..Default::default()
        };
        cpu.regs.rip = 0x8000;
        cpu.regs.rflags = 2;
        cpu.sregs.cr4 |= CR4_FSGSBASE;
        setup(&mut cpu);
        emulate_at_rip(&mut cpu, &mem).unwrap();
        cpu
    }

    #[test]
    fn stac_and_clac_flip_ac() {
        let cpu = run(&[0x0f, 0x01, 0xcb], |_| {});
        assert_eq!((cpu.regs.rflags, cpu.regs.rip), (2 | RFLAGS_AC, 0x8003));
        let cpu = run(&[0x0f, 0x01, 0xca], |c| c.regs.rflags |= RFLAGS_AC);
        assert_eq!(cpu.regs.rflags, 2);
    }

    #[test]
    fn rdpid_reads_tsc_aux() {
        // rdpid %rax
        let cpu = run(&[0xf3, 0x0f, 0xc7, 0xf8], |c| {
            c.msrs.insert(MSR_TSC_AUX, 3);
            c.regs.rax = u64::MAX;
        });
        assert_eq!((cpu.regs.rax, cpu.regs.rip), (3, 0x8004));
    }

    #[test]
    fn fsgsbase_reads_and_writes_the_segment_bases() {
        // wrgsbase %rdi
        let cpu = run(&[0xf3, 0x48, 0x0f, 0xae, 0xdf], |c| {
            c.regs.rdi = 0xffff_8880_1234_0000;
        });
        assert_eq!(cpu.sregs.gs.base, 0xffff_8880_1234_0000);
        // rdfsbase %rax
        let cpu = run(&[0xf3, 0x48, 0x0f, 0xae, 0xc0], |c| {
            c.sregs.fs.base = 0x7f00_0000_1000
        });
        assert_eq!(cpu.regs.rax, 0x7f00_0000_1000);
    }
}
