//! The vCPU state the instruction handlers read and write, behind a trait: KVM's vCPU in
//! production, a plain struct in tests.

use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xsave, Msrs};

/// Size of KVM_GET_XSAVE's region: legacy area, header and extended components.
pub const XSAVE_REGION_SIZE: usize = 4096;

/// The bytes of KVM_GET_XSAVE's region (standard XSAVE layout).
pub type XsaveRegion = [u8; XSAVE_REGION_SIZE];
use kvm_ioctls::VcpuFd;

#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("{what}: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM refused MSR {0:#x}")]
    Msr(u32),
}

/// Register state and event injection of one vCPU.
pub trait VcpuState {
    fn regs(&self) -> Result<kvm_regs, CpuError>;
    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), CpuError>;
    fn sregs(&self) -> Result<kvm_sregs, CpuError>;
    fn set_sregs(&mut self, sregs: &kvm_sregs) -> Result<(), CpuError>;
    /// The x87/SSE/AVX/... state in the standard (non-compacted) XSAVE layout of KVM_GET_XSAVE.
    fn xsave(&self) -> Result<XsaveRegion, CpuError>;
    fn set_xsave(&mut self, xsave: &XsaveRegion) -> Result<(), CpuError>;
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

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CpuError {
    move |source| CpuError::Kvm { what, source }
}

impl VcpuState for VcpuFd {
    fn regs(&self) -> Result<kvm_regs, CpuError> {
        self.get_regs().map_err(kvm("KVM_GET_REGS"))
    }
    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), CpuError> {
        VcpuFd::set_regs(self, regs).map_err(kvm("KVM_SET_REGS"))
    }
    fn sregs(&self) -> Result<kvm_sregs, CpuError> {
        self.get_sregs().map_err(kvm("KVM_GET_SREGS"))
    }
    fn set_sregs(&mut self, sregs: &kvm_sregs) -> Result<(), CpuError> {
        VcpuFd::set_sregs(self, sregs).map_err(kvm("KVM_SET_SREGS"))
    }
    fn xsave(&self) -> Result<XsaveRegion, CpuError> {
        let x = self.get_xsave().map_err(kvm("KVM_GET_XSAVE"))?;
        let mut out = [0u8; XSAVE_REGION_SIZE];
        for (chunk, word) in out.chunks_exact_mut(4).zip(x.region.iter()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        Ok(out)
    }
    fn set_xsave(&mut self, xsave: &XsaveRegion) -> Result<(), CpuError> {
        let mut x = kvm_xsave {
            region: [0; 1024],
            extra: Default::default(),
        };
        for (word, chunk) in x.region.iter_mut().zip(xsave.chunks_exact(4)) {
            *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        // SAFETY: `x` is a whole kvm_xsave (4 KiB), which is what KVM_SET_XSAVE reads.
        unsafe { VcpuFd::set_xsave(self, &x) }.map_err(kvm("KVM_SET_XSAVE"))
    }
    fn xcr0(&self) -> Result<u64, CpuError> {
        let xcrs = self.get_xcrs().map_err(kvm("KVM_GET_XCRS"))?;
        let n = (xcrs.nr_xcrs as usize).min(xcrs.xcrs.len());
        Ok(xcrs.xcrs[..n]
            .iter()
            .find(|x| x.xcr == 0)
            .map_or(1, |x| x.value))
    }
    fn events(&self) -> Result<kvm_vcpu_events, CpuError> {
        self.get_vcpu_events().map_err(kvm("KVM_GET_VCPU_EVENTS"))
    }
    fn set_events(&mut self, events: &kvm_vcpu_events) -> Result<(), CpuError> {
        self.set_vcpu_events(events)
            .map_err(kvm("KVM_SET_VCPU_EVENTS"))
    }
    fn msr(&self, index: u32) -> Result<u64, CpuError> {
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .map_err(|_| CpuError::Msr(index))?;
        let n = self.get_msrs(&mut msrs).map_err(kvm("KVM_GET_MSRS"))?;
        if n != 1 {
            return Err(CpuError::Msr(index));
        }
        Ok(msrs.as_slice()[0].data)
    }
    fn set_msr(&mut self, index: u32, value: u64) -> Result<(), CpuError> {
        let msrs = Msrs::from_entries(&[kvm_msr_entry {
            index,
            data: value,
            ..Default::default()
        }])
        .map_err(|_| CpuError::Msr(index))?;
        let n = self.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
        if n != 1 {
            return Err(CpuError::Msr(index));
        }
        Ok(())
    }
    fn set_guest_debug_mode(&mut self, mode: GuestDebug) -> Result<(), CpuError> {
        let mut debug = kvm_bindings::kvm_guest_debug::default();
        match mode {
            GuestDebug::Breakpoint(addr) => {
                debug.control =
                    kvm_bindings::KVM_GUESTDBG_ENABLE | kvm_bindings::KVM_GUESTDBG_USE_HW_BP;
                debug.arch.debugreg[0] = addr;
                // DR7: L0 enabled, execute breakpoint of length 1; bit 10 reads as 1.
                debug.arch.debugreg[7] = 0x401;
            }
            GuestDebug::SingleStep => {
                debug.control =
                    kvm_bindings::KVM_GUESTDBG_ENABLE | kvm_bindings::KVM_GUESTDBG_SINGLESTEP;
            }
        }
        self.set_guest_debug(&debug)
            .map_err(kvm("KVM_SET_GUEST_DEBUG"))
    }
}
