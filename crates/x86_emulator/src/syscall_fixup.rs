//! Repair of `syscall` from user mode on kvm_pvm.
//!
//! There, a guest's user-mode `syscall` sets RCX (return RIP), R11 (RFLAGS) and RIP = LSTAR,
//! but leaves CS/SS at the user's selectors, CPL 3 (RFLAGS masked with FMASK, as the #PF
//! frame below shows). The kernel's entry point is a supervisor page, so the next fetch
//! takes a #PF from user mode at RIP = LSTAR, which the host delivers to the guest's #PF
//! handler in ring 0 (and Linux turns into SIGSEGV). Nothing of the user-mode side reaches
//! vessel (guest-debug breakpoints do not fire in native ring 3, MMIO fetches there come
//! back as #PF), but ring-0 code runs through KVM's emulator, which honours guest-debug
//! hardware breakpoints.
//!
//! So vessel puts a breakpoint (KVM_SET_GUEST_DEBUG, DR0) on the guest's #PF handler. When
//! it hits with a frame saying "user mode, RIP = CR2 = LSTAR", vessel drops the frame and
//! completes the `syscall` as the CPU defines it: CS = STAR[47:32] (64-bit, DPL 0),
//! SS = that + 8, RFLAGS = R11 & ~FMASK, RIP = LSTAR, RSP still the user's. Every other hit
//! steps the handler's first instruction with the breakpoint off (KVM's emulator ignores
//! RFLAGS.RF for guest-debug breakpoints, so resuming in place would hit it again), then
//! puts the breakpoint back.
//!
//! R11 is the guest's to choose: user code that jumps to LSTAR (rather than executing
//! `syscall`) takes the same #PF with R11 holding anything. So RFLAGS is built from R11 the
//! way SYSRET builds it (SDM Vol. 2B, SYSRET: `RFLAGS <- (R11 & 3C7FD7H) | 2`: reserved
//! bits 3, 5, 15 and 22-63, RF and VM cleared, bit 1 set; IOPL, VIF, VIP kept), then masked
//! with FMASK as SYSCALL does, and the fix-up happens only when that equals the RFLAGS
//! image the CPU pushed in the #PF frame (kvm_pvm applies FMASK before the fault): the
//! vCPU never gets flags the CPU did not attest. Anything else stays the page fault it is.
//! What the frame cannot attest are R11's FMASK bits, which become the user's flags again
//! at SYSRET; a forged R11 reaches the kernel only where FMASK lacks IF (see
//! [`frame_attests`]).

use std::cell::Cell;

use kvm_bindings::kvm_segment;

use crate::cpu::{GuestDebug, VcpuState};
use crate::guest_virt::{GuestVirt, Privilege};
use crate::EmulationError;
use crate::GuestMemory;

const MSR_EFER: u32 = 0xc000_0080;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_FMASK: u32 = 0xc000_0084;
const EFER_SCE: u64 = 1;
const EFER_LMA: u64 = 1 << 10;
const PF_VECTOR: u64 = 14;
const RFLAGS_FIXED: u64 = 1 << 1;
/// The RFLAGS bits SYSRET takes from R11 (SDM Vol. 2B, SYSRET).
const SYSRET_R11_BITS: u64 = 0x3c_7fd7;

/// The RFLAGS of kernel entry for a `syscall` whose saved RFLAGS is `r11`: R11 clamped as
/// SYSRET clamps it, then FMASK cleared as SYSCALL does; bit 1 always set.
pub fn syscall_entry_rflags(r11: u64, fmask: u64) -> u64 {
    (r11 & SYSRET_R11_BITS & !fmask) | RFLAGS_FIXED
}

/// Whether the RFLAGS image the CPU pushed in the #PF frame is the kernel-entry RFLAGS of
/// a `syscall` that saved `r11` (kvm_pvm masks RFLAGS with FMASK before the fault; the
/// frame's RF, set for faults, is not compared). A jump to LSTAR pushes the user's own
/// RFLAGS, which matches only if it has every FMASK bit clear: never, when FMASK has IF
/// (as Linux's does), since ring 3 cannot clear IF.
fn frame_attests(frame_rflags: u64, r11: u64, fmask: u64) -> bool {
    frame_rflags & SYSRET_R11_BITS == syscall_entry_rflags(r11, fmask)
}

thread_local! {
    /// The #PF handler address this thread's vCPU has a breakpoint on (each vCPU runs on
    /// its own thread).
    static ARMED: Cell<Option<u64>> = const { Cell::new(None) };
    /// Single-stepping over the handler's first instruction, breakpoint off.
    static STEPPING: Cell<bool> = const { Cell::new(false) };
}

/// The #PF handler's address from the guest's 64-bit IDT, when it has one.
fn page_fault_handler(vcpu: &dyn VcpuState, mem: &GuestMemory) -> Option<u64> {
    let sregs = vcpu.sregs().ok()?;
    if sregs.efer & EFER_LMA == 0 || u64::from(sregs.idt.limit) < PF_VECTOR * 16 + 15 {
        return None;
    }
    let virt = GuestVirt::new(mem, &sregs);
    let mut gate = [0u8; 16];
    virt.read(
        sregs.idt.base + PF_VECTOR * 16,
        &mut gate,
        Privilege::Supervisor,
    )
    .ok()?;
    let lo = u64::from_le_bytes(gate[..8].try_into().ok()?);
    let hi = u64::from_le_bytes(gate[8..].try_into().ok()?);
    if lo >> 47 & 1 == 0 {
        return None;
    }
    Some((lo & 0xffff) | (lo >> 48 & 0xffff) << 16 | (hi & 0xffff_ffff) << 32)
}

/// Put (or move) the breakpoint on the guest's #PF handler once the guest uses `syscall`
/// (EFER.SCE and LSTAR set) and has a 64-bit IDT. Called on every emulation exit; cheap
/// when nothing changed.
pub fn arm(vcpu: &mut dyn VcpuState, mem: &GuestMemory) -> Result<(), EmulationError> {
    let Some(handler) = page_fault_handler(vcpu, mem) else {
        return Ok(());
    };
    if ARMED.with(Cell::get) == Some(handler) {
        return Ok(());
    }
    if vcpu.msr(MSR_EFER)? & EFER_SCE == 0 || vcpu.msr(MSR_LSTAR)? == 0 {
        return Ok(());
    }
    vcpu.set_guest_debug_mode(GuestDebug::Breakpoint(handler))?;
    ARMED.with(|a| a.set(Some(handler)));
    STEPPING.with(|s| s.set(false));
    Ok(())
}

fn flat_segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 0,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// What a debug exit turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugHit {
    /// A user-mode `syscall` the host left half done, now completed.
    SyscallCompleted,
    /// An ordinary page fault: the handler resumes, one instruction single-stepped.
    PageFault,
    /// That step is done; the breakpoint is back.
    Stepped,
}

/// Handle KVM_EXIT_DEBUG. `None` when the exit is not vessel's breakpoint.
pub fn on_debug_exit(
    vcpu: &mut dyn VcpuState,
    mem: &GuestMemory,
) -> Result<Option<DebugHit>, EmulationError> {
    let Some(handler) = ARMED.with(Cell::get) else {
        return Ok(None);
    };
    if STEPPING.with(Cell::get) {
        vcpu.set_guest_debug_mode(GuestDebug::Breakpoint(handler))?;
        STEPPING.with(|s| s.set(false));
        return Ok(Some(DebugHit::Stepped));
    }
    let mut regs = vcpu.regs()?;
    if regs.rip != handler {
        return Ok(None);
    }
    let mut sregs = vcpu.sregs()?;
    let virt = GuestVirt::new(mem, &sregs);
    // #PF frame: error code, RIP, CS, RFLAGS, RSP, SS.
    let mut frame = [0u8; 48];
    let hit = match virt.read(regs.rsp, &mut frame, Privilege::Supervisor) {
        Ok(()) => {
            let word = |i: usize| {
                u64::from_le_bytes(frame[i * 8..i * 8 + 8].try_into().unwrap_or_default())
            };
            let (rip, cs, rflags, rsp) = (word(1), word(2), word(3), word(4));
            let lstar = vcpu.msr(MSR_LSTAR)?;
            if cs & 3 == 3
                && rip == lstar
                && sregs.cr2 == lstar
                && frame_attests(rflags, regs.r11, vcpu.msr(MSR_FMASK)?)
            {
                let star = vcpu.msr(MSR_STAR)?;
                let fmask = vcpu.msr(MSR_FMASK)?;
                let selector = (star >> 32) as u16 & !3;
                sregs.cs = flat_segment(selector, true);
                sregs.ss = flat_segment(selector.wrapping_add(8), false);
                vcpu.set_sregs(&sregs)?;
                regs.rip = lstar;
                regs.rsp = rsp;
                regs.rflags = syscall_entry_rflags(regs.r11, fmask);
                DebugHit::SyscallCompleted
            } else {
                DebugHit::PageFault
            }
        }
        Err(_) => DebugHit::PageFault,
    };
    if hit == DebugHit::PageFault {
        vcpu.set_guest_debug_mode(GuestDebug::SingleStep)?;
        STEPPING.with(|s| s.set(true));
    } else {
        vcpu.set_regs(&regs)?;
    }
    Ok(Some(hit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{long_mode_sregs, FakeVcpu, PageTables};
    use vm_memory::{Bytes, GuestAddress};

    const IDT: u64 = 0x2000;
    const HANDLER: u64 = 0xffff_ffff_8100_0a00;
    const LSTAR: u64 = 0xffff_ffff_81c0_0080;
    const KSTACK: u64 = 0x9000;

    fn machine() -> (FakeVcpu, GuestMemory) {
        let mut pt = PageTables::new();
        pt.identity(0x10_0000);
        let mem = pt.mem();
        let lo = (HANDLER & 0xffff) | 0x10 << 16 | 0x8e << 40 | (HANDLER >> 16 & 0xffff) << 48;
        mem.write_obj(lo, GuestAddress(IDT + 14 * 16)).unwrap();
        mem.write_obj(HANDLER >> 32, GuestAddress(IDT + 14 * 16 + 8))
            .unwrap();
        let mut cpu = FakeVcpu {
            sregs: long_mode_sregs(pt.cr3()),
            ..Default::default()
        };
        cpu.sregs.idt.base = IDT;
        cpu.sregs.idt.limit = 0xfff;
        cpu.msrs.insert(MSR_EFER, 0xd01);
        cpu.msrs.insert(MSR_LSTAR, LSTAR);
        cpu.msrs.insert(MSR_STAR, 0x0023_0010_0000_0000);
        cpu.msrs.insert(MSR_FMASK, 0x4_7700);
        (cpu, mem)
    }

    /// The state after the host delivered #PF for a fetch at `rip` from CS `cs`.
    fn fault_frame(cpu: &mut FakeVcpu, mem: &GuestMemory, rip: u64, cs: u64) {
        // kvm_pvm's half-done `syscall` masked RFLAGS (0x246) with FMASK; faults set RF.
        let frame = [0x15, rip, cs, 0x1_0046, 0x7ffd_0000, 0x2b];
        for (i, v) in frame.iter().enumerate() {
            mem.write_obj(*v, GuestAddress(KSTACK + 8 * i as u64))
                .unwrap();
        }
        cpu.regs.rip = HANDLER;
        cpu.regs.rsp = KSTACK;
        cpu.regs.rflags = 0x2;
        cpu.regs.rcx = 0x40_1234;
        cpu.regs.r11 = 0x246;
        cpu.sregs.cr2 = rip;
    }

    #[test]
    fn arms_a_breakpoint_on_the_page_fault_handler() {
        ARMED.with(|a| a.set(None));
        let (mut cpu, mem) = machine();
        arm(&mut cpu, &mem).unwrap();
        assert_eq!(cpu.debug, Some(GuestDebug::Breakpoint(HANDLER)));
    }

    #[test]
    fn a_user_mode_fault_at_lstar_becomes_the_syscall_it_was() {
        ARMED.with(|a| a.set(None));
        let (mut cpu, mem) = machine();
        arm(&mut cpu, &mem).unwrap();
        fault_frame(&mut cpu, &mem, LSTAR, 0x33);
        assert_eq!(
            on_debug_exit(&mut cpu, &mem).unwrap(),
            Some(DebugHit::SyscallCompleted)
        );
        assert_eq!((cpu.regs.rip, cpu.regs.rsp), (LSTAR, 0x7ffd_0000));
        assert_eq!(cpu.regs.rflags, 0x246 & !0x4_7700 | 2);
        assert_eq!((cpu.regs.rcx, cpu.regs.r11), (0x40_1234, 0x246));
        assert_eq!(
            (cpu.sregs.cs.selector, cpu.sregs.cs.dpl, cpu.sregs.cs.l),
            (0x10, 0, 1)
        );
        assert_eq!((cpu.sregs.ss.selector, cpu.sregs.ss.dpl), (0x18, 0));
    }

    #[test]
    fn other_page_faults_step_the_handler_then_rearm() {
        ARMED.with(|a| a.set(None));
        let (mut cpu, mem) = machine();
        arm(&mut cpu, &mem).unwrap();
        fault_frame(&mut cpu, &mem, 0x40_2000, 0x33);
        assert_eq!(
            on_debug_exit(&mut cpu, &mem).unwrap(),
            Some(DebugHit::PageFault)
        );
        assert_eq!((cpu.regs.rip, cpu.regs.rflags), (HANDLER, 2));
        assert_eq!(cpu.debug, Some(GuestDebug::SingleStep));
        cpu.regs.rip = HANDLER + 4;
        assert_eq!(
            on_debug_exit(&mut cpu, &mem).unwrap(),
            Some(DebugHit::Stepped)
        );
        assert_eq!(cpu.debug, Some(GuestDebug::Breakpoint(HANDLER)));
        cpu.regs.rip = 0x1234;
        assert_eq!(on_debug_exit(&mut cpu, &mem).unwrap(), None);
    }

    #[test]
    fn entry_rflags_clear_reserved_rf_and_vm_bits_and_set_bit_1() {
        // Bits 3, 5, 15, RF (16), VM (17) and 22-63 set; bit 1 clear.
        let hostile = 0xffff_ffff_ffc3_8028;
        assert_eq!(syscall_entry_rflags(hostile, 0), 0x2);
        assert_eq!(syscall_entry_rflags(u64::MAX, 0), 0x3c_7fd7);
        assert_eq!(syscall_entry_rflags(0, 0), 0x2);
        assert_eq!(syscall_entry_rflags(0, u64::MAX), 0x2);
    }

    #[test]
    fn entry_rflags_keep_iopl_vif_vip_as_sysret_does_unless_fmask_clears_them() {
        let iopl3_vif_vip = 0x3000 | 1 << 19 | 1 << 20;
        assert_eq!(
            syscall_entry_rflags(iopl3_vif_vip | 0x246, 0),
            iopl3_vif_vip | 0x246
        );
        // Linux's FMASK (0x47700): TF, IF, DF, IOPL, NT, AC cleared.
        assert_eq!(
            syscall_entry_rflags(iopl3_vif_vip | 0x346, 0x4_7700),
            1 << 19 | 1 << 20 | 0x46
        );
    }

    #[test]
    fn a_jump_to_lstar_with_a_forged_r11_stays_a_page_fault() {
        ARMED.with(|a| a.set(None));
        let (mut cpu, mem) = machine();
        arm(&mut cpu, &mem).unwrap();
        fault_frame(&mut cpu, &mem, LSTAR, 0x33);
        // The frame is the user's own RFLAGS (IF set), not a masked one.
        mem.write_obj(0x246u64, GuestAddress(KSTACK + 24)).unwrap();
        assert_eq!(
            on_debug_exit(&mut cpu, &mem).unwrap(),
            Some(DebugHit::PageFault)
        );
        cpu.regs.rip = HANDLER;
        on_debug_exit(&mut cpu, &mem).unwrap();
        // A masked-looking frame, but R11 claims flags outside FMASK the frame lacks (CF).
        mem.write_obj(0x1_0046u64, GuestAddress(KSTACK + 24))
            .unwrap();
        cpu.regs.r11 = 0x247;
        assert_eq!(
            on_debug_exit(&mut cpu, &mem).unwrap(),
            Some(DebugHit::PageFault)
        );
        assert_eq!((cpu.regs.rip, cpu.regs.rflags), (HANDLER, 2));
        assert_eq!(cpu.sregs.cs.selector, long_mode_sregs(0).cs.selector);
    }

    #[test]
    fn r11_bits_sysret_drops_do_not_count_against_the_frame() {
        ARMED.with(|a| a.set(None));
        let (mut cpu, mem) = machine();
        arm(&mut cpu, &mem).unwrap();
        fault_frame(&mut cpu, &mem, LSTAR, 0x33);
        cpu.regs.r11 = 0x246 | 1 << 16 | 1 << 17 | 1 << 40;
        assert_eq!(
            on_debug_exit(&mut cpu, &mem).unwrap(),
            Some(DebugHit::SyscallCompleted)
        );
        assert_eq!(cpu.regs.rflags, 0x246 & !0x4_7700 | 2);
    }
}
