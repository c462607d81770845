//! x87/SSE control instructions KVM's emulator lacks: `fwait`, `ldmxcsr`, `stmxcsr`,
//! against the legacy area of the vCPU's XSAVE state.

use iced_x86::Mnemonic;

use crate::decode::Ctx;
use crate::{Exception, Failure};

const CR0_MP: u64 = 1 << 1;
const CR0_EM: u64 = 1 << 2;
const CR0_TS: u64 = 1 << 3;
const CR4_OSFXSR: u64 = 1 << 9;
const FSW: usize = 2;
const FSW_ES: u16 = 1 << 7;
const MXCSR: usize = 24;
const MXCSR_MASK: usize = 28;

/// `fwait`: #NM when CR0.TS and CR0.MP are set, #MF when an unmasked x87 exception is
/// pending, otherwise nothing.
pub fn fwait(ctx: &mut Ctx) -> Result<(), Failure> {
    if ctx.sregs.cr0 & (CR0_TS | CR0_MP) == CR0_TS | CR0_MP {
        return Err(Exception::DeviceNotAvailable.into());
    }
    let region = ctx.vcpu.xsave()?;
    let fsw = u16::from_le_bytes([region[FSW], region[FSW + 1]]);
    if fsw & FSW_ES != 0 {
        return Err(Exception::MathFault.into());
    }
    ctx.advance();
    Ok(())
}

/// `ldmxcsr m32` / `stmxcsr m32`.
pub fn mxcsr(ctx: &mut Ctx) -> Result<(), Failure> {
    if ctx.sregs.cr0 & CR0_EM != 0 || ctx.sregs.cr4 & CR4_OSFXSR == 0 {
        return Err(Exception::InvalidOpcode.into());
    }
    if ctx.sregs.cr0 & CR0_TS != 0 {
        return Err(Exception::DeviceNotAvailable.into());
    }
    let addr = ctx.memory_address()?;
    let who = ctx.privilege();
    let mut region = ctx.vcpu.xsave()?;
    if ctx.insn.mnemonic() == Mnemonic::Ldmxcsr {
        let value = ctx.virt.read_sized(addr, 4, who)? as u32;
        let mut mask = u32::from_le_bytes(
            region[MXCSR_MASK..MXCSR_MASK + 4]
                .try_into()
                .expect("4 bytes"),
        );
        if mask == 0 {
            mask = 0xffbf;
        }
        if value & !mask != 0 {
            return Err(Exception::GeneralProtection(0).into());
        }
        region[MXCSR..MXCSR + 4].copy_from_slice(&value.to_le_bytes());
        ctx.vcpu.set_xsave(&region)?;
    } else {
        ctx.virt.write(addr, &region[MXCSR..MXCSR + 4], who)?;
    }
    ctx.advance();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{long_mode_sregs, FakeVcpu, PageTables};
    use crate::{emulate_at_rip, Outcome};
    use vm_memory::{Bytes, GuestAddress};

    fn run(
        code: &[u8],
        setup: impl FnOnce(&mut FakeVcpu),
    ) -> (FakeVcpu, crate::GuestMemory, Result<Outcome, String>) {
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
        let out = emulate_at_rip(&mut cpu, &mem).map_err(|e| e.to_string());
        (cpu, mem, out)
    }

    #[test]
    fn fwait_is_a_no_op_without_pending_exceptions_and_raises_mf_with_one() {
        let (cpu, _, out) = run(&[0x9b], |_| {});
        assert_eq!(out, Ok(Outcome::Emulated("wait".into())));
        assert_eq!(cpu.regs.rip, 0x8001);
        let (_, _, out) = run(&[0x9b], |c| c.xsave[FSW] = 0x80);
        assert!(out.unwrap_err().contains("MathFault"));
    }

    #[test]
    fn ldmxcsr_and_stmxcsr_move_mxcsr_through_memory() {
        /// `stmxcsr (%rdi)` and `ldmxcsr (%rdi)`, natively: (MXCSR stored, MXCSR after loading `v`).
        fn native(v: u32) -> (u32, u32) {
            let (mut saved, mut after) = (0u32, 0u32);
            let value = v;
            // SAFETY: saves MXCSR, loads `v` (a valid value), reads it back, restores.
            unsafe {
                std::arch::asm!(
                    "stmxcsr [{s}]", "ldmxcsr [{v}]", "stmxcsr [{a}]", "ldmxcsr [{s}]",
                    s = in(reg) &mut saved, v = in(reg) &value, a = in(reg) &mut after,
                );
            }
            (saved, after)
        }
        let (_, native_after) = native(0x3f80 | 0x6000);
        let (cpu, _, out) = run(&[0x0f, 0xae, 0x17], |c| {
            c.sregs.cr4 |= CR4_OSFXSR;
            c.xsave[MXCSR_MASK..MXCSR_MASK + 4].copy_from_slice(&0xffffu32.to_le_bytes());
        });
        // Memory at 0x9000 is 0: a valid MXCSR.
        assert_eq!(out, Ok(Outcome::Emulated("ldmxcsr".into())));
        assert_eq!(&cpu.xsave[MXCSR..MXCSR + 4], &[0, 0, 0, 0]);
        let (_, mem, _) = run(&[0x0f, 0xae, 0x1f], |c| {
            c.sregs.cr4 |= CR4_OSFXSR;
            c.xsave[MXCSR..MXCSR + 4].copy_from_slice(&native_after.to_le_bytes());
        });
        assert_eq!(mem.read_obj::<u32>(GuestAddress(0x9000)).unwrap(), 0x7f80);
        let (_, _, out) = run(&[0x0f, 0xae, 0x17], |c| {
            c.sregs.cr4 |= CR4_OSFXSR;
            c.regs.rdi = 0x9100;
            c.xsave[MXCSR_MASK..MXCSR_MASK + 4].copy_from_slice(&0xffffu32.to_le_bytes());
        });
        assert_eq!(out, Ok(Outcome::Emulated("ldmxcsr".into())));
        assert_eq!(native_after, 0x7f80);
    }
}
