//! Emulation of the x86-64 guest instructions the host's KVM gives up on.
//!
//! On nested hosts whose `/dev/kvm` is a software KVM (kvm_pvm), guest ring-0 code runs through
//! KVM's instruction emulator, which lacks some instructions a stock Linux kernel executes
//! (`int3`, `iretq`, `sysretq`, `swapgs`, `xsave`/`xrstor`, `cmpxchg16b`, ...). KVM then
//! stops the vCPU with KVM_EXIT_INTERNAL_ERROR (suberror "emulation failure") and leaves RIP
//! on the instruction. [`emulate_at_rip`] decodes that instruction, carries it out against
//! the vCPU's registers and guest memory (through the guest's page tables), and leaves the
//! vCPU ready to resume after it. What it does not know stays an error, and the caller
//! reports the fault.
//!
//! The crate knows nothing of KVM's file descriptors or of the VMM: the vCPU is a
//! [`VcpuState`] (vmm's `KvmVcpu` implements it over KVM's ioctls; `test_support::FakeVcpu`,
//! built with the `test-support` feature, over plain data), guest memory a
//! `vm_memory::GuestMemoryMmap`.
//!
//! The crate's parts: [`cpu`] (the vCPU state the handlers need, behind a trait),
//! [`guest_virt`] (page-table walk and guest-virtual memory access), `decode` (fetch,
//! decode, dispatch), `segments` (descriptor-table loads), and one file per group of
//! instructions: `control_flow` (iret, int3/int n, sysret), `system` (swapgs), `xsave`
//! (xsave family and xgetbv, with the component layout of CPUID leaf 0DH in
//! [`xsave_layout`]), `cmpxchg16b`, `bits`, `fpu`, `misc`; [`syscall_fixup`] completes the
//! user-mode `syscall` kvm_pvm leaves half done.
//!
//! Writes done here go straight to guest memory through vessel's mapping: they bypass
//! KVM's write tracking of shadowed guest page tables. No handled instruction writes page
//! tables in practice (they write stacks, FPU save areas and SLUB freelists); the page walk
//! itself only sets accessed/dirty bits, which a stale shadow entry tolerates.

mod bits;
mod cmpxchg16b;
mod control_flow;
pub mod cpu;
mod decode;
mod fpu;
pub mod guest_virt;
mod misc;
mod segments;
pub mod syscall_fixup;
mod system;
mod xsave;
pub mod xsave_layout;

use std::collections::HashSet;
use std::sync::Mutex;

pub use cpu::{CpuError, GuestDebug, VcpuState};
pub use decode::emulate_at_rip;
pub use guest_virt::PageFault;
pub use xsave_layout::XsaveLayout;

/// Guest memory as the emulator reads and writes it (the same type as vessel's `arch`).
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Why an instruction could not be emulated; the caller falls back to its fault report.
#[derive(Debug, thiserror::Error)]
pub enum EmulationError {
    #[error(transparent)]
    Cpu(#[from] CpuError),
    #[error("cannot fetch the instruction at {linear:#x}: {fault}")]
    Fetch { linear: u64, fault: PageFault },
    #[error("cannot decode the instruction bytes {bytes:02x?}")]
    Decode { bytes: Vec<u8> },
    #[error("`{0}` is not emulated by vessel")]
    Unsupported(String),
    #[error("`{what}` cannot be emulated in this CPU mode ({mode})")]
    Mode { what: String, mode: &'static str },
    #[error("guest-physical {0:#x} is not RAM")]
    NotRam(u64),
    #[error("`{what}`: {why}")]
    Invalid { what: String, why: String },
}

/// An exception the emulated instruction raises; it is delivered to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exception {
    /// #GP with an error code (a selector or 0).
    GeneralProtection(u16),
    /// #PF at a linear address.
    PageFault(PageFault),
    /// #SS with an error code.
    StackFault(u16),
    /// #NP with the selector as error code.
    NotPresent(u16),
    /// #UD.
    InvalidOpcode,
    /// #NM (CR0.TS).
    DeviceNotAvailable,
    /// #MF: a pending unmasked x87 exception.
    MathFault,
}

/// How a handler stops short: the instruction raises an exception (delivered to the guest),
/// or vessel cannot carry it out (reported as the vCPU's fault).
#[derive(Debug)]
pub(crate) enum Failure {
    Raise(Exception),
    Fail(EmulationError),
}

impl From<Exception> for Failure {
    fn from(e: Exception) -> Self {
        Failure::Raise(e)
    }
}

impl From<EmulationError> for Failure {
    fn from(e: EmulationError) -> Self {
        Failure::Fail(e)
    }
}

impl From<CpuError> for Failure {
    fn from(e: CpuError) -> Self {
        Failure::Fail(e.into())
    }
}

impl From<guest_virt::AccessError> for Failure {
    fn from(e: guest_virt::AccessError) -> Self {
        match e {
            guest_virt::AccessError::Fault(pf) => Failure::Raise(Exception::PageFault(pf)),
            guest_virt::AccessError::NotRam(phys) => Failure::Fail(EmulationError::NotRam(phys)),
        }
    }
}

/// What [`emulate_at_rip`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The instruction was carried out; RIP is past it.
    Emulated(String),
    /// The instruction raised an exception, which is now being delivered to the guest.
    Raised(String, Exception),
}

impl Outcome {
    /// The instruction's mnemonic.
    pub fn mnemonic(&self) -> &str {
        match self {
            Outcome::Emulated(m) | Outcome::Raised(m, _) => m,
        }
    }
}

static ANNOUNCED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Emulate the instruction a vCPU stopped on, logging once per mnemonic at info level that
/// vessel emulated it (so users on nested hosts see why it runs), and every other time at
/// debug level (at info with `VESSEL_EMULATION_LOG` set).
pub fn emulate_reporting(
    vcpu: &mut dyn VcpuState,
    mem: &GuestMemory,
) -> Result<Outcome, EmulationError> {
    // Best effort: a guest without a usable IDT yet simply gets no breakpoint.
    let _ = syscall_fixup::arm(vcpu, mem);
    let outcome = emulate_at_rip(vcpu, mem)?;
    let every = std::env::var_os("VESSEL_EMULATION_LOG").is_some();
    let first = {
        let mut seen = ANNOUNCED.lock().unwrap_or_else(|p| p.into_inner());
        seen.get_or_insert_with(HashSet::new)
            .insert(outcome.mnemonic().to_string())
    };
    let raising = match &outcome {
        Outcome::Raised(_, e) => format!(", raising {e:?}"),
        Outcome::Emulated(_) => String::new(),
    };
    let mnemonic = outcome.mnemonic();
    if first || every {
        tracing::info!("emulated `{mnemonic}` for the guest (the host's KVM could not){raising}");
    } else {
        tracing::debug!("emulated `{mnemonic}` for the guest (the host's KVM could not){raising}");
    }
    Ok(outcome)
}

/// Arm the `syscall` fix-up's breakpoint for a guest that already uses `syscall` and has a
/// 64-bit IDT (see [`syscall_fixup`]); nothing for one that does not yet. A restored or
/// migrated VM needs this before its first run: the breakpoint is the host's and never
/// saved, and the first emulation exit (which arms it otherwise) may come only after the
/// guest's first `syscall`.
pub fn arm_syscall_fixup(
    vcpu: &mut dyn VcpuState,
    mem: &GuestMemory,
) -> Result<(), EmulationError> {
    syscall_fixup::arm(vcpu, mem)
}

/// Handle KVM_EXIT_DEBUG from vessel's breakpoint on the guest's #PF handler (see
/// [`syscall_fixup`]); false when the exit is not vessel's.
pub fn handle_debug_exit(vcpu: &mut dyn VcpuState, mem: &GuestMemory) -> bool {
    match syscall_fixup::on_debug_exit(vcpu, mem) {
        Ok(Some(hit)) => {
            if hit == syscall_fixup::DebugHit::SyscallCompleted {
                let mut seen = ANNOUNCED.lock().unwrap_or_else(|p| p.into_inner());
                if seen
                    .get_or_insert_with(HashSet::new)
                    .insert("syscall".into())
                {
                    tracing::info!("completed a user-mode `syscall` the host's KVM left in ring 3");
                }
            } else {
                tracing::trace!("guest page-fault breakpoint: {hit:?}");
            }
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!("cannot handle the debug exit: {e}");
            false
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
