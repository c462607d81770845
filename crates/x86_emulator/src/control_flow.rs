//! Control transfers KVM's emulator only knows in real mode: `iret`, `int3`/`int n` and
//! exception delivery through the IDT, and `sysret`.

use iced_x86::{Mnemonic, OpKind};
use kvm_bindings::kvm_segment;

use crate::decode::{vector_of, Ctx};
use crate::guest_virt::Privilege;
use crate::segments::{null_segment, read_descriptor};
use crate::{Exception, Failure};

const RFLAGS_FIXED: u64 = 1 << 1;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_IOPL: u64 = 3 << 12;
const RFLAGS_NT: u64 = 1 << 14;
const RFLAGS_RF: u64 = 1 << 16;
const RFLAGS_VM: u64 = 1 << 17;
const RFLAGS_AC: u64 = 1 << 18;
const RFLAGS_VIF: u64 = 1 << 19;
const RFLAGS_VIP: u64 = 1 << 20;
const RFLAGS_ID: u64 = 1 << 21;
/// Bits IRET may load at CPL 0 (in 64-bit mode VM stays 0).
const RFLAGS_IRET_MASK: u64 = 0x0000_7fd5
    | RFLAGS_IOPL
    | RFLAGS_NT
    | RFLAGS_RF
    | RFLAGS_AC
    | RFLAGS_VIF
    | RFLAGS_VIP
    | RFLAGS_ID;
/// SYSRET loads RFLAGS from R11 with these bits.
const SYSRET_RFLAGS_MASK: u64 = 0x3c_7fd7;

const MSR_STAR: u32 = 0xc000_0081;
const EFER_SCE: u64 = 1;

const GATE_INTERRUPT: u8 = 0xe;
const GATE_TRAP: u8 = 0xf;

fn canonical(addr: u64) -> bool {
    ((addr as i64) << 16 >> 16) as u64 == addr
}

/// `iret`, `iretd`, `iretq` in 64-bit mode (to any privilege level, a 64-bit or compatibility
/// mode code segment) and in 32-bit protected mode (no task returns, no return to vm86).
pub fn iret(ctx: &mut Ctx) -> Result<(), Failure> {
    let size: usize = match ctx.insn.mnemonic() {
        Mnemonic::Iretq => 8,
        Mnemonic::Iretd => 4,
        _ => 2,
    };
    let long = ctx.long_mode();
    if !long && ctx.regs.rflags & RFLAGS_NT != 0 {
        return Err(ctx.mode_error("task return (NT set)"));
    }
    let old_cpl = ctx.cpl();
    let who = ctx.privilege();
    let sp_mask = stack_mask(ctx);
    let sp = ctx.regs.rsp & sp_mask;
    let stack_linear = |ctx: &Ctx, at: u64| {
        let off = (sp + at) & sp_mask;
        if long {
            off
        } else {
            ctx.sregs.ss.base.wrapping_add(off) & 0xffff_ffff
        }
    };
    let pop = |ctx: &Ctx, slot: u64| -> Result<u64, Failure> {
        Ok(ctx
            .virt
            .read_sized(stack_linear(ctx, slot * size as u64), size, who)?)
    };
    let new_ip = pop(ctx, 0)?;
    let cs_sel = pop(ctx, 1)? as u16;
    let mut new_flags = pop(ctx, 2)?;
    if size == 2 {
        new_flags |= ctx.regs.rflags & !0xffff;
    }
    if !long && new_flags & RFLAGS_VM != 0 && old_cpl == 0 {
        return Err(ctx.mode_error("return to virtual-8086 mode"));
    }
    let rpl = (cs_sel & 3) as u8;
    if cs_sel & !3 == 0 || rpl < old_cpl {
        return Err(Exception::GeneralProtection(cs_sel & !3).into());
    }
    let cs_desc = read_descriptor(&ctx.virt, &ctx.sregs, cs_sel)?;
    if !cs_desc.is_code()
        || (cs_desc.conforming() && cs_desc.dpl() > rpl)
        || (!cs_desc.conforming() && cs_desc.dpl() != rpl)
    {
        return Err(Exception::GeneralProtection(cs_sel & !3).into());
    }
    if !cs_desc.present() {
        return Err(Exception::NotPresent(cs_sel & !3).into());
    }
    // 64-bit mode always pops SS:RSP; protected mode only when the privilege changes.
    let outer = rpl > old_cpl;
    let mut new_ss = ctx.sregs.ss;
    let mut new_sp = None;
    if long || outer {
        let sp_val = pop(ctx, 3)?;
        let ss_sel = pop(ctx, 4)? as u16;
        new_sp = Some(sp_val);
        let to_64bit = long && cs_desc.long();
        new_ss = if ss_sel & !3 == 0 {
            if !to_64bit || rpl == 3 {
                return Err(Exception::GeneralProtection(0).into());
            }
            null_segment(ss_sel)
        } else {
            if (ss_sel & 3) as u8 != rpl {
                return Err(Exception::GeneralProtection(ss_sel & !3).into());
            }
            let ss_desc = read_descriptor(&ctx.virt, &ctx.sregs, ss_sel)?;
            if !ss_desc.writable_data() || ss_desc.dpl() != rpl {
                return Err(Exception::GeneralProtection(ss_sel & !3).into());
            }
            if !ss_desc.present() {
                return Err(Exception::StackFault(ss_sel & !3).into());
            }
            ss_desc.to_segment(ss_sel)
        };
    }
    let new_cs = cs_desc.to_segment(cs_sel);
    if long && new_cs.l == 1 && !canonical(new_ip) {
        return Err(Exception::GeneralProtection(0).into());
    }
    // RFLAGS: IOPL only changes at CPL 0, IF only at CPL <= IOPL.
    let mut mask = RFLAGS_IRET_MASK;
    if !long && old_cpl == 0 {
        mask |= RFLAGS_VM;
    }
    if old_cpl != 0 {
        mask &= !RFLAGS_IOPL;
    }
    let iopl = ((ctx.regs.rflags & RFLAGS_IOPL) >> 12) as u8;
    if old_cpl > iopl {
        mask &= !RFLAGS_IF;
    }
    if size == 4 {
        mask &= 0xffff_ffff;
    }
    ctx.regs.rflags = (ctx.regs.rflags & !mask) | (new_flags & mask) | RFLAGS_FIXED;
    ctx.regs.rip = if new_cs.l == 1 {
        new_ip
    } else {
        new_ip & 0xffff_ffff
    };
    match new_sp {
        Some(v) => {
            ctx.regs.rsp = if new_ss.db == 1 || new_cs.l == 1 {
                v
            } else {
                (ctx.regs.rsp & !0xffff) | (v & 0xffff)
            }
        }
        None => ctx.regs.rsp = (ctx.regs.rsp & !sp_mask) | ((sp + 3 * size as u64) & sp_mask),
    }
    ctx.sregs.cs = new_cs;
    ctx.sregs.ss = new_ss;
    if outer {
        let new_cpl = rpl;
        for seg in [
            &mut ctx.sregs.ds,
            &mut ctx.sregs.es,
            &mut ctx.sregs.fs,
            &mut ctx.sregs.gs,
        ] {
            let data_or_nonconforming = seg.type_ & 0x8 == 0 || seg.type_ & 0x4 == 0;
            if seg.unusable == 0 && seg.s == 1 && data_or_nonconforming && seg.dpl < new_cpl {
                // In 64-bit mode FS/GS keep their bases (they live in MSRs there).
                let base = seg.base;
                *seg = null_segment(0);
                if long {
                    seg.base = base;
                }
            }
        }
    }
    ctx.sregs_dirty = true;
    // IRET ends NMI blocking.
    let mut events = ctx.vcpu.events()?;
    if events.nmi.masked != 0 {
        events.nmi.masked = 0;
        events.flags = 0;
        ctx.vcpu.set_events(&events)?;
    }
    Ok(())
}

/// Address-size mask of the stack pointer.
fn stack_mask(ctx: &Ctx) -> u64 {
    if ctx.long_mode() {
        u64::MAX
    } else if ctx.sregs.ss.db == 1 {
        0xffff_ffff
    } else {
        0xffff
    }
}

/// `int3`: a #BP trap, delivered with RIP after the instruction.
pub fn int3(ctx: &mut Ctx) -> Result<(), Failure> {
    ctx.advance();
    deliver(ctx, 3, None, true)
}

/// `int imm8`: a software interrupt (the gate's DPL must allow the current CPL).
pub fn int_n(ctx: &mut Ctx) -> Result<(), Failure> {
    if ctx.insn.op0_kind() != OpKind::Immediate8 {
        return Err(ctx.mode_error("int without an immediate"));
    }
    let vector = ctx.insn.immediate8();
    ctx.advance();
    deliver(ctx, vector, None, true)
}

/// Deliver a fault raised by an emulated instruction (RIP is still on it); #PF also sets CR2.
pub fn raise(ctx: &mut Ctx, e: Exception) -> Result<(), Failure> {
    if let Exception::PageFault(pf) = e {
        ctx.sregs.cr2 = pf.linear;
        ctx.sregs_dirty = true;
    }
    let (vector, code) = vector_of(e);
    deliver(ctx, vector, code, false)
}

/// Deliver interrupt/exception `vector` through the 64-bit IDT, as the CPU does: gate, new
/// CPL and stack (TSS RSPn or IST), the 40-byte frame (+ error code), RFLAGS and CS:RIP.
/// The return RIP is `ctx.regs.rip` as it stands.
fn deliver(
    ctx: &mut Ctx,
    vector: u8,
    error_code: Option<u32>,
    software: bool,
) -> Result<(), Failure> {
    if !ctx.long_mode() || ctx.sregs.efer & (1 << 10) == 0 {
        return Err(ctx.mode_error("interrupt delivery outside 64-bit mode"));
    }
    let idt = ctx.sregs.idt;
    let offset = u64::from(vector) * 16;
    if offset + 15 > u64::from(idt.limit) {
        return Err(Exception::GeneralProtection((u16::from(vector) << 3) | 2).into());
    }
    let mut gate = [0u8; 16];
    ctx.virt.read(
        idt.base.wrapping_add(offset),
        &mut gate,
        Privilege::Supervisor,
    )?;
    let lo = u64::from_le_bytes(gate[..8].try_into().expect("8 bytes"));
    let hi = u64::from_le_bytes(gate[8..].try_into().expect("8 bytes"));
    let gate_type = (lo >> 40 & 0xf) as u8;
    let gate_dpl = (lo >> 45 & 3) as u8;
    let present = lo >> 47 & 1 != 0;
    let idt_code = (u16::from(vector) << 3) | 2;
    if gate_type != GATE_INTERRUPT && gate_type != GATE_TRAP {
        return Err(Exception::GeneralProtection(idt_code).into());
    }
    let old_cpl = ctx.cpl();
    if software && gate_dpl < old_cpl {
        return Err(Exception::GeneralProtection(idt_code).into());
    }
    if !present {
        return Err(Exception::NotPresent(idt_code).into());
    }
    let target = (lo & 0xffff) | (lo >> 48 & 0xffff) << 16 | (hi & 0xffff_ffff) << 32;
    let cs_sel = (lo >> 16 & 0xffff) as u16;
    let ist = lo >> 32 & 7;
    let cs_desc = read_descriptor(&ctx.virt, &ctx.sregs, cs_sel)?;
    if !cs_desc.is_code() || !cs_desc.long() || cs_desc.dpl() > old_cpl {
        return Err(Exception::GeneralProtection(cs_sel & !3).into());
    }
    if !cs_desc.present() {
        return Err(Exception::NotPresent(cs_sel & !3).into());
    }
    let new_cpl = if cs_desc.conforming() {
        old_cpl
    } else {
        cs_desc.dpl()
    };
    let tss = ctx.sregs.tr.base;
    let mut new_ss = ctx.sregs.ss;
    let mut rsp = ctx.regs.rsp;
    if new_cpl < old_cpl {
        rsp = ctx.virt.read_u64(
            tss.wrapping_add(4 + 8 * u64::from(new_cpl)),
            Privilege::Supervisor,
        )?;
        new_ss = null_segment(u16::from(new_cpl));
    }
    if ist != 0 {
        rsp = ctx.virt.read_u64(
            tss.wrapping_add(0x24 + 8 * (ist - 1)),
            Privilege::Supervisor,
        )?;
    }
    rsp &= !0xf;
    let old_cs = ctx.sregs.cs;
    let mut frame = vec![
        ctx.regs.rip,
        u64::from(old_cs.selector),
        ctx.regs.rflags,
        ctx.regs.rsp,
        u64::from(ctx.sregs.ss.selector),
    ];
    if let Some(code) = error_code {
        frame.insert(0, u64::from(code));
    }
    let frame_bytes: Vec<u8> = frame.iter().flat_map(|v| v.to_le_bytes()).collect();
    rsp = rsp.wrapping_sub(frame_bytes.len() as u64);
    let who = if new_cpl == 3 {
        Privilege::User
    } else {
        Privilege::Supervisor
    };
    ctx.virt.write(rsp, &frame_bytes, who)?;
    let mut cs = cs_desc.to_segment((cs_sel & !3) | u16::from(new_cpl));
    cs.dpl = new_cpl;
    ctx.sregs.cs = cs;
    ctx.sregs.ss = new_ss;
    ctx.sregs_dirty = true;
    ctx.regs.rsp = rsp;
    ctx.regs.rip = target;
    let mut clear = RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM;
    if gate_type == GATE_INTERRUPT {
        clear |= RFLAGS_IF;
    }
    ctx.regs.rflags &= !clear;
    Ok(())
}

fn flat_segment(selector: u16, code: bool, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 3,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// `sysretq` / `sysretl`: back to CPL 3 with CS/SS from STAR[63:48], RIP from RCX and
/// RFLAGS from R11.
pub fn sysret(ctx: &mut Ctx) -> Result<(), Failure> {
    if !ctx.long_mode() {
        return Err(ctx.mode_error("sysret outside 64-bit mode"));
    }
    if ctx.sregs.efer & EFER_SCE == 0 {
        return Err(Exception::InvalidOpcode.into());
    }
    if ctx.cpl() != 0 {
        return Err(Exception::GeneralProtection(0).into());
    }
    let star = ctx.vcpu.msr(MSR_STAR)?;
    let base = (star >> 48) as u16;
    let to_64 = ctx.insn.mnemonic() == Mnemonic::Sysretq;
    if to_64 {
        if !canonical(ctx.regs.rcx) {
            return Err(Exception::GeneralProtection(0).into());
        }
        ctx.sregs.cs = flat_segment(base.wrapping_add(16) | 3, true, true);
        ctx.regs.rip = ctx.regs.rcx;
    } else {
        ctx.sregs.cs = flat_segment(base | 3, true, false);
        ctx.regs.rip = ctx.regs.rcx & 0xffff_ffff;
    }
    ctx.sregs.ss = flat_segment(base.wrapping_add(8) | 3, false, false);
    ctx.regs.rflags = (ctx.regs.r11 & SYSRET_RFLAGS_MASK) | RFLAGS_FIXED;
    ctx.sregs_dirty = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{long_mode_sregs, segment, FakeVcpu, PageTables};
    use crate::{emulate_at_rip, Outcome};
    use vm_memory::{Bytes, GuestAddress};

    const GDT: u64 = 0x1000;
    const IDT: u64 = 0x2000;
    const TSS: u64 = 0x3000;
    const CODE: u64 = 0x8000;
    const HANDLER: u64 = 0x8800;
    const STACK: u64 = 0xa000;
    /// Linux's x86-64 GDT: 0x10 kernel CS, 0x18 kernel DS, 0x23 user32 CS, 0x2b user DS,
    /// 0x33 user CS.
    const DESCRIPTORS: [(u64, u64); 5] = [
        (0x10, 0x00af_9b00_0000_ffff),
        (0x18, 0x00cf_9300_0000_ffff),
        (0x20, 0x00cf_fb00_0000_ffff),
        (0x28, 0x00cf_f300_0000_ffff),
        (0x30, 0x00af_fb00_0000_ffff),
    ];

    fn gate(target: u64, selector: u16, ist: u8, type_: u8, dpl: u8) -> [u8; 16] {
        let lo = (target & 0xffff)
            | u64::from(selector) << 16
            | u64::from(ist) << 32
            | u64::from(type_) << 40
            | u64::from(dpl) << 45
            | 1 << 47
            | (target >> 16 & 0xffff) << 48;
        let hi = target >> 32;
        let mut g = [0u8; 16];
        g[..8].copy_from_slice(&lo.to_le_bytes());
        g[8..].copy_from_slice(&hi.to_le_bytes());
        g
    }

    /// A 64-bit CPL-0 vCPU at CODE running `code`, with GDT, IDT (#BP, #GP, #PF, int 0x80
    /// gates) and a TSS whose RSP0 is STACK + 0x800 and IST1 STACK + 0x1000.
    fn machine(code: &[u8]) -> (FakeVcpu, crate::GuestMemory) {
        let mut pt = PageTables::new();
        pt.identity(0x10_0000);
        let mem = pt.mem();
        for (sel, d) in DESCRIPTORS {
            mem.write_obj(d, GuestAddress(GDT + sel)).unwrap();
        }
        for (vector, ist, type_, dpl) in [
            (3u64, 0u8, 0xeu8, 3u8),
            (13, 0, 0xe, 0),
            (14, 1, 0xe, 0),
            (0x80, 0, 0xf, 3),
        ] {
            let g = gate(HANDLER + vector, 0x10, ist, type_, dpl);
            mem.write_slice(&g, GuestAddress(IDT + vector * 16))
                .unwrap();
        }
        mem.write_obj(STACK + 0x800, GuestAddress(TSS + 4)).unwrap();
        mem.write_obj(STACK + 0x1000, GuestAddress(TSS + 0x24))
            .unwrap();
        mem.write_slice(code, GuestAddress(CODE)).unwrap();
        let mut cpu = FakeVcpu {
            sregs: long_mode_sregs(pt.cr3()),
            ..Default::default()
        };
        cpu.sregs.gdt.base = GDT;
        cpu.sregs.gdt.limit = 0x3f;
        cpu.sregs.idt.base = IDT;
        cpu.sregs.idt.limit = 0xfff;
        cpu.sregs.tr.base = TSS;
        cpu.regs.rip = CODE;
        cpu.regs.rsp = STACK;
        cpu.regs.rflags = 0x246;
        (cpu, mem)
    }

    fn push_frame(mem: &crate::GuestMemory, at: u64, frame: &[u64]) {
        for (i, v) in frame.iter().enumerate() {
            mem.write_obj(*v, GuestAddress(at + 8 * i as u64)).unwrap();
        }
    }

    fn stack(mem: &crate::GuestMemory, at: u64, n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| mem.read_obj(GuestAddress(at + 8 * i as u64)).unwrap())
            .collect()
    }

    #[test]
    fn iretq_to_the_same_level_pops_the_five_word_frame() {
        let (mut cpu, mem) = machine(&[0x48, 0xcf]);
        push_frame(
            &mem,
            STACK,
            &[0xffff_ffff_8100_1234, 0x10, 0x1_0082, 0x9f00, 0x18],
        );
        cpu.events.nmi.masked = 1;
        assert_eq!(
            emulate_at_rip(&mut cpu, &mem).unwrap(),
            Outcome::Emulated("iretq".into())
        );
        assert_eq!(cpu.regs.rip, 0xffff_ffff_8100_1234);
        assert_eq!(cpu.regs.rsp, 0x9f00);
        assert_eq!(cpu.regs.rflags, 0x1_0082);
        assert_eq!(
            (cpu.sregs.cs.selector, cpu.sregs.cs.l, cpu.sregs.ss.dpl),
            (0x10, 1, 0)
        );
        assert_eq!(cpu.events.nmi.masked, 0, "iret ends NMI blocking");
    }

    #[test]
    fn iretq_to_user_mode_loads_cpl3_segments() {
        let (mut cpu, mem) = machine(&[0x48, 0xcf]);
        push_frame(&mem, STACK, &[0x40_1000, 0x33, 0x3246, 0x7fff_f000, 0x2b]);
        emulate_at_rip(&mut cpu, &mem).unwrap();
        assert_eq!((cpu.regs.rip, cpu.regs.rsp), (0x40_1000, 0x7fff_f000));
        let (cs, ss) = (cpu.sregs.cs, cpu.sregs.ss);
        assert_eq!(
            (cs.selector, cs.dpl, cs.l, ss.selector, ss.dpl),
            (0x33, 3, 1, 0x2b, 3)
        );
        // IOPL may be set from CPL 0.
        assert_eq!(cpu.regs.rflags, 0x3246);
    }

    #[test]
    fn iretq_to_a_less_privileged_cs_than_its_rpl_raises_gp() {
        let (mut cpu, mem) = machine(&[0x48, 0xcf]);
        // CS 0x13: RPL 3 but the descriptor's DPL is 0.
        push_frame(&mem, STACK, &[0x40_1000, 0x13, 0x246, 0x7fff_f000, 0x2b]);
        let out = emulate_at_rip(&mut cpu, &mem).unwrap();
        assert_eq!(
            out,
            Outcome::Raised("iretq".into(), Exception::GeneralProtection(0x10))
        );
        assert_eq!(cpu.regs.rip, HANDLER + 13);
        // Error code, then the frame of the faulting iretq.
        assert_eq!(
            stack(&mem, STACK - 48, 6),
            [0x10, CODE, 0x10, 0x246, STACK, 0x18]
        );
    }

    #[test]
    fn int3_delivers_bp_with_rip_after_it_and_iretq_comes_back() {
        let (mut cpu, mem) = machine(&[0xcc, 0x90]);
        mem.write_slice(&[0x48, 0xcf], GuestAddress(HANDLER + 3))
            .unwrap();
        cpu.regs.rsp = STACK - 8;
        assert_eq!(
            emulate_at_rip(&mut cpu, &mem).unwrap(),
            Outcome::Emulated("int3".into())
        );
        assert_eq!(cpu.regs.rip, HANDLER + 3);
        // Aligned down to 16 bytes, then the frame.
        assert_eq!(cpu.regs.rsp, STACK - 16 - 40);
        assert_eq!(
            stack(&mem, cpu.regs.rsp, 5),
            [CODE + 1, 0x10, 0x246, STACK - 8, 0x18]
        );
        assert_eq!(cpu.regs.rflags & RFLAGS_IF, 0, "interrupt gate clears IF");
        emulate_at_rip(&mut cpu, &mem).unwrap();
        assert_eq!(
            (cpu.regs.rip, cpu.regs.rsp, cpu.regs.rflags),
            (CODE + 1, STACK - 8, 0x246)
        );
    }

    #[test]
    fn int_from_user_mode_switches_to_rsp0() {
        let (mut cpu, mem) = machine(&[0xcd, 0x80]);
        cpu.sregs.cs = segment(0x33, 3, true);
        cpu.sregs.ss = segment(0x2b, 3, false);
        cpu.regs.rsp = 0x7000;
        emulate_at_rip(&mut cpu, &mem).unwrap();
        assert_eq!(cpu.regs.rip, HANDLER + 0x80);
        assert_eq!(cpu.regs.rsp, STACK + 0x800 - 40);
        assert_eq!(
            stack(&mem, cpu.regs.rsp, 5),
            [CODE + 2, 0x33, 0x246, 0x7000, 0x2b]
        );
        assert_eq!(
            (cpu.sregs.cs.dpl, cpu.sregs.ss.dpl, cpu.sregs.ss.unusable),
            (0, 0, 1)
        );
        assert_eq!(cpu.regs.rflags & RFLAGS_IF, RFLAGS_IF, "trap gate keeps IF");
    }

    #[test]
    fn a_fault_on_an_ist_vector_uses_the_ist_stack_and_sets_cr2() {
        let (mut cpu, mem) = machine(&[0x48, 0xcf]);
        cpu.regs.rsp = 0x50_0000; // not mapped: the pop faults
        let out = emulate_at_rip(&mut cpu, &mem).unwrap();
        let Outcome::Raised(_, Exception::PageFault(pf)) = out else {
            panic!("{out:?}")
        };
        assert_eq!(pf.linear, 0x50_0000);
        assert_eq!(cpu.sregs.cr2, 0x50_0000);
        assert_eq!(cpu.regs.rip, HANDLER + 14);
        assert_eq!(cpu.regs.rsp, STACK + 0x1000 - 48);
        assert_eq!(stack(&mem, cpu.regs.rsp, 2), [0, CODE]);
    }

    #[test]
    fn sysretq_returns_to_user_mode_from_star() {
        let (mut cpu, mem) = machine(&[0x48, 0x0f, 0x07]);
        cpu.msrs.insert(MSR_STAR, 0x0023_0010_0000_0000);
        cpu.regs.rcx = 0x40_2000;
        cpu.regs.r11 = 0x3_0346;
        emulate_at_rip(&mut cpu, &mem).unwrap();
        assert_eq!(cpu.regs.rip, 0x40_2000);
        assert_eq!(cpu.regs.rflags, 0x3_0346 & SYSRET_RFLAGS_MASK | 2);
        assert_eq!(
            (cpu.sregs.cs.selector, cpu.sregs.cs.l, cpu.sregs.cs.dpl),
            (0x33, 1, 3)
        );
        assert_eq!((cpu.sregs.ss.selector, cpu.sregs.ss.dpl), (0x2b, 3));
        let tables = (cpu.sregs.gdt, cpu.sregs.idt, cpu.sregs.tr);
        cpu.sregs = long_mode_sregs(cpu.sregs.cr3);
        (cpu.sregs.gdt, cpu.sregs.idt, cpu.sregs.tr) = tables;
        cpu.regs.rip = CODE;
        cpu.regs.rcx = 0x8000_0000_0000;
        let out = emulate_at_rip(&mut cpu, &mem).unwrap();
        assert_eq!(
            out,
            Outcome::Raised("sysretq".into(), Exception::GeneralProtection(0))
        );
    }

    /// Run `iretq` natively in this (user-mode) process to a frame with `flags`, returning the
    /// RFLAGS it loaded.
    fn native_iretq_flags(flags: u64) -> u64 {
        let out: u64;
        // SAFETY: builds a same-privilege iret frame (SS, RSP, RFLAGS, CS, RIP) that returns
        // to the next instruction with the stack as it was; reads RFLAGS back and restores
        // the original flags. Only flags the CPU lets CPL 3 change are affected.
        unsafe {
            std::arch::asm!(
                "pushfq",
                "mov {saved}, [rsp]",
                "mov {tmp:x}, ss",
                "push {tmp}",
                "lea {tmp}, [rsp + 8]",
                "push {tmp}",
                "push {flags}",
                "mov {tmp:x}, cs",
                "push {tmp}",
                "lea {tmp}, [rip + 2f]",
                "push {tmp}",
                "iretq",
                "2:",
                "pushfq",
                "pop {out}",
                "push {saved}",
                "popfq",
                "add rsp, 8",
                flags = in(reg) flags,
                saved = out(reg) _,
                tmp = out(reg) _,
                out = lateout(reg) out,
            );
        }
        out
    }

    #[test]
    fn iretq_at_cpl3_masks_rflags_like_the_native_instruction() {
        for flags in [
            0x202u64,
            0x3202,
            0x4_0202,
            0x246,
            0x0000_0000_0020_0a97,
            0x202 | RFLAGS_NT,
        ] {
            let native = native_iretq_flags(flags);
            let (mut cpu, mem) = machine(&[0x48, 0xcf]);
            cpu.sregs.cs = segment(0x33, 3, true);
            cpu.sregs.ss = segment(0x2b, 3, false);
            cpu.regs.rflags = native_iretq_flags(0x202);
            push_frame(&mem, STACK, &[0x40_1000, 0x33, flags, STACK + 0x40, 0x2b]);
            emulate_at_rip(&mut cpu, &mem).unwrap();
            assert_eq!(cpu.regs.rflags, native, "frame flags {flags:#x}");
        }
    }
}
