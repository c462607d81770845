//! Bit counts KVM's emulator lacks: `popcnt`, `lzcnt`, `tzcnt` (Linux patches `popcnt` into
//! hweight when the CPU has it).

use iced_x86::Mnemonic;

use crate::decode::Ctx;
use crate::Failure;

const RFLAGS_CF: u64 = 1 << 0;
const RFLAGS_PF: u64 = 1 << 2;
const RFLAGS_AF: u64 = 1 << 4;
const RFLAGS_ZF: u64 = 1 << 6;
const RFLAGS_SF: u64 = 1 << 7;
const RFLAGS_OF: u64 = 1 << 11;
const ARITH_FLAGS: u64 = RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF;

/// Result and the flags it sets, for an operand of `bits` bits.
pub fn count_value(mnemonic: Mnemonic, src: u64, bits: u32) -> (u64, u64) {
    let mask = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let src = src & mask;
    match mnemonic {
        Mnemonic::Popcnt => {
            let zf = if src == 0 { RFLAGS_ZF } else { 0 };
            (u64::from(src.count_ones()), zf)
        }
        Mnemonic::Lzcnt => {
            let n = u64::from(src.leading_zeros() - (64 - bits));
            let cf = if src == 0 { RFLAGS_CF } else { 0 };
            let zf = if n == 0 { RFLAGS_ZF } else { 0 };
            (n, cf | zf)
        }
        _ => {
            let n = if src == 0 {
                u64::from(bits)
            } else {
                u64::from(src.trailing_zeros())
            };
            let cf = if src == 0 { RFLAGS_CF } else { 0 };
            let zf = if n == 0 { RFLAGS_ZF } else { 0 };
            (n, cf | zf)
        }
    }
}

/// `popcnt`/`lzcnt`/`tzcnt r, r/m`: flags other than CF/ZF are cleared, as this host's CPU
/// does (they are undefined for lzcnt/tzcnt).
pub fn count(ctx: &mut Ctx) -> Result<(), Failure> {
    let dest = ctx.insn.op0_register();
    let size = dest.size();
    let src = ctx.source_operand(1, size)?;
    let (value, flags) = count_value(ctx.insn.mnemonic(), src, size as u32 * 8);
    ctx.set_gpr(dest, value)?;
    ctx.regs.rflags = (ctx.regs.rflags & !ARITH_FLAGS) | flags;
    ctx.advance();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulate_at_rip;
    use crate::test_support::{long_mode_sregs, FakeVcpu, PageTables};
    use vm_memory::{Bytes, GuestAddress};

    /// Run `op %rdi, %rax` (or 32/16-bit forms) natively: (rax, rflags & ARITH_FLAGS).
    fn native(code: &[u8], src: u64) -> (u64, u64) {
        let (mut rax, flags): (u64, u64) = (0x1111_2222_3333_4444, 0);
        let _ = flags;
        let f: u64;
        // SAFETY: each arm runs one register-only instruction on rax/rdi and reads RFLAGS.
        unsafe {
            match code {
                [0xf3, 0x48, 0x0f, 0xb8, 0xc7] => {
                    std::arch::asm!("popcnt rax, rdi", "pushfq", "pop {f}", f = out(reg) f, inout("rax") rax, in("rdi") src)
                }
                [0xf3, 0x0f, 0xb8, 0xc7] => {
                    std::arch::asm!("popcnt eax, edi", "pushfq", "pop {f}", f = out(reg) f, inout("rax") rax, in("rdi") src)
                }
                [0x66, 0xf3, 0x0f, 0xb8, 0xc7] => {
                    std::arch::asm!("popcnt ax, di", "pushfq", "pop {f}", f = out(reg) f, inout("rax") rax, in("rdi") src)
                }
                [0xf3, 0x48, 0x0f, 0xbd, 0xc7] => {
                    std::arch::asm!("lzcnt rax, rdi", "pushfq", "pop {f}", f = out(reg) f, inout("rax") rax, in("rdi") src)
                }
                [0xf3, 0x0f, 0xbd, 0xc7] => {
                    std::arch::asm!("lzcnt eax, edi", "pushfq", "pop {f}", f = out(reg) f, inout("rax") rax, in("rdi") src)
                }
                [0xf3, 0x48, 0x0f, 0xbc, 0xc7] => {
                    std::arch::asm!("tzcnt rax, rdi", "pushfq", "pop {f}", f = out(reg) f, inout("rax") rax, in("rdi") src)
                }
                [0x66, 0xf3, 0x0f, 0xbc, 0xc7] => {
                    std::arch::asm!("tzcnt ax, di", "pushfq", "pop {f}", f = out(reg) f, inout("rax") rax, in("rdi") src)
                }
                _ => unreachable!("no native form for {code:02x?}"),
            }
        }
        (rax, f & ARITH_FLAGS)
    }

    fn emulated(code: &[u8], src: u64) -> (u64, u64) {
        let mut pt = PageTables::new();
        pt.identity(0x10_0000);
        let mem = pt.mem();
        mem.write_slice(code, GuestAddress(0x8000)).unwrap();
        let mut cpu = FakeVcpu {
            sregs: long_mode_sregs(pt.cr3()),
            ..Default::default()
        };
        cpu.regs.rip = 0x8000;
        cpu.regs.rax = 0x1111_2222_3333_4444;
        cpu.regs.rdi = src;
        cpu.regs.rflags = 0x2 | ARITH_FLAGS;
        emulate_at_rip(&mut cpu, &mem).unwrap();
        assert_eq!(cpu.regs.rip, 0x8000 + code.len() as u64);
        (cpu.regs.rax, cpu.regs.rflags & ARITH_FLAGS)
    }

    #[test]
    fn popcnt_lzcnt_tzcnt_match_the_native_instructions() {
        let codes: [&[u8]; 7] = [
            &[0xf3, 0x48, 0x0f, 0xb8, 0xc7],
            &[0xf3, 0x0f, 0xb8, 0xc7],
            &[0x66, 0xf3, 0x0f, 0xb8, 0xc7],
            &[0xf3, 0x48, 0x0f, 0xbd, 0xc7],
            &[0xf3, 0x0f, 0xbd, 0xc7],
            &[0xf3, 0x48, 0x0f, 0xbc, 0xc7],
            &[0x66, 0xf3, 0x0f, 0xbc, 0xc7],
        ];
        let values = [
            0,
            1,
            0x8000_0000_0000_0000,
            0xffff_0000,
            0x1_0000,
            0xdead_beef_0000_0100,
            u64::MAX,
        ];
        for code in codes {
            for v in values {
                assert_eq!(emulated(code, v), native(code, v), "{code:02x?} on {v:#x}");
            }
        }
    }

    #[test]
    fn popcnt_reads_a_memory_operand() {
        let mut pt = PageTables::new();
        pt.identity(0x10_0000);
        let mem = pt.mem();
        // popcnt 0x10(%rdi), %rax
        mem.write_slice(&[0xf3, 0x48, 0x0f, 0xb8, 0x47, 0x10], GuestAddress(0x8000))
            .unwrap();
        mem.write_obj(0xf0f0u64, GuestAddress(0x9010)).unwrap();
        let mut cpu = FakeVcpu {
            sregs: long_mode_sregs(pt.cr3()),
            ..Default::default()
        };
        cpu.regs.rip = 0x8000;
        cpu.regs.rdi = 0x9000;
        emulate_at_rip(&mut cpu, &mem).unwrap();
        assert_eq!((cpu.regs.rax, cpu.regs.rip), (8, 0x8006));
    }
}
