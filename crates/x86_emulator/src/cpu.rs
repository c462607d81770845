//! The vCPU state the instruction handlers read and write, behind a trait: KVM's vCPU in
//! production (vmm's `KvmVcpu`), a plain struct in tests.

use kvm_bindings::{kvm_regs, kvm_sregs, kvm_vcpu_events};

use crate::xsave_layout::XsaveLayout;

/// Why the vCPU's state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// The hypervisor refused a request (`what` names it, e.g. the ioctl).
    #[error("{what}: {source}")]
    Hypervisor {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("KVM refused MSR {0:#x}")]
    Msr(u32),
    #[error("cannot allocate a KVM XSAVE buffer of {0} bytes")]
    XsaveBuffer(usize),
    #[error("an XSAVE region of {got} bytes for a vCPU whose region has {want}")]
    XsaveLength { got: usize, want: usize },
}

/// Register state and event injection of one vCPU.
pub trait VcpuState {
    fn regs(&self) -> Result<kvm_regs, CpuError>;
    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), CpuError>;
    fn sregs(&self) -> Result<kvm_sregs, CpuError>;
    fn set_sregs(&mut self, sregs: &kvm_sregs) -> Result<(), CpuError>;
    /// The x87/SSE/AVX/AMX/... state in the standard (non-compacted) XSAVE format, as
    /// KVM_GET_XSAVE2 gives it: as many bytes as KVM's region for this vCPU has (at least
    /// 4096), components at the offsets of [`VcpuState::xsave_layout`].
    fn xsave(&self) -> Result<Vec<u8>, CpuError>;
    /// Load a region read with [`VcpuState::xsave`] (same length).
    fn set_xsave(&mut self, xsave: &[u8]) -> Result<(), CpuError>;
    /// The XSAVE layout of the CPUID the guest was given (leaf 0DH).
    fn xsave_layout(&self) -> Result<XsaveLayout, CpuError>;
    /// XCR0 (1, x87 only, when the vCPU has no XCRs).
    fn xcr0(&self) -> Result<u64, CpuError>;
    fn events(&self) -> Result<kvm_vcpu_events, CpuError>;
    fn set_events(&mut self, events: &kvm_vcpu_events) -> Result<(), CpuError>;
    fn msr(&self, index: u32) -> Result<u64, CpuError>;
    fn set_msr(&mut self, index: u32, value: u64) -> Result<(), CpuError>;
    /// Set vessel's guest debugging (KVM_SET_GUEST_DEBUG): either stops the vCPU with
    /// KVM_EXIT_DEBUG.
    fn set_guest_debug_mode(&mut self, mode: GuestDebug) -> Result<(), CpuError>;
}

/// What vessel asks of KVM's guest debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestDebug {
    /// An instruction breakpoint (DR0) at a guest-linear address.
    Breakpoint(u64),
    /// Stop after the next instruction.
    SingleStep,
}
