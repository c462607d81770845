//! [`VcpuState`] for a KVM vCPU: its file descriptor, and the size of its XSAVE region.
//!
//! KVM_GET_XSAVE and KVM_SET_XSAVE use the 4096-byte `struct kvm_xsave`. A vCPU whose
//! state needs more (AMX tile data makes the standard-format area 11008 bytes) has a larger
//! region: KVM_GET_XSAVE then fails with EINVAL, KVM_GET_XSAVE2 fills the whole region, and
//! KVM_SET_XSAVE reads the whole region. KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) on the VM gives
//! its size (0 on kernels before 5.17, which have only the 4096-byte one).
//!
//! The region grows beyond 4096 bytes only for components the process enabled for its
//! guests with arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM) (AMX tile data): KVM reports them in
//! KVM_GET_SUPPORTED_CPUID, and lets a guest's CPUID and XCR0 have them, only after that
//! request. vessel makes no such request, so today its guests have no AMX and the region is
//! 4096 bytes; this code still sizes its buffers from KVM_CAP_XSAVE2, which a permission
//! request made before the VM's vCPUs are created would raise accordingly.

use kvm_bindings::{
    kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xsave, Msrs, Xsave,
    KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::VcpuFd;

use x86_emulator::{CpuError, GuestDebug, VcpuState, XsaveLayout};

/// Size of `struct kvm_xsave`, the region of KVM_GET_XSAVE.
const LEGACY_REGION: usize = std::mem::size_of::<kvm_xsave>();
const WORD: usize = std::mem::size_of::<u32>();

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CpuError {
    move |source| CpuError::Hypervisor {
        what,
        source: std::io::Error::from_raw_os_error(source.errno()),
    }
}

/// A KVM vCPU as the emulator sees it.
pub struct KvmVcpu<'a> {
    fd: &'a mut VcpuFd,
    /// KVM_CAP_XSAVE2 of the VM: the size of the vCPU's XSAVE region, or 0.
    xsave2_size: usize,
}

impl<'a> KvmVcpu<'a> {
    /// `xsave2_size`: what KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) reported for the vCPU's VM
    /// after the process's last ARCH_REQ_XCOMP_GUEST_PERM (0 when KVM lacks the capability).
    pub fn new(fd: &'a mut VcpuFd, xsave2_size: usize) -> Self {
        KvmVcpu { fd, xsave2_size }
    }

    /// Size of the vCPU's XSAVE region.
    fn region_len(&self) -> usize {
        self.xsave2_size.max(LEGACY_REGION)
    }

    /// Words past `struct kvm_xsave` that KVM_GET_XSAVE2 writes and KVM_SET_XSAVE reads,
    /// when there are any.
    fn extra_words(&self) -> Option<usize> {
        (self.xsave2_size > LEGACY_REGION)
            .then(|| (self.xsave2_size - LEGACY_REGION).div_ceil(WORD))
    }

    fn buffer(&self, extra: usize) -> Result<Xsave, CpuError> {
        Xsave::new(extra).map_err(|_| CpuError::XsaveBuffer(self.region_len()))
    }
}

fn words_to_bytes(words: &[u32], out: &mut Vec<u8>) {
    out.extend(words.iter().flat_map(|w| w.to_le_bytes()));
}

fn bytes_to_words(bytes: &[u8], words: &mut [u32]) {
    for (word, chunk) in words.iter_mut().zip(bytes.chunks(WORD)) {
        let mut b = [0u8; WORD];
        b[..chunk.len()].copy_from_slice(chunk);
        *word = u32::from_le_bytes(b);
    }
}

impl VcpuState for KvmVcpu<'_> {
    fn regs(&self) -> Result<kvm_regs, CpuError> {
        self.fd.get_regs().map_err(kvm("KVM_GET_REGS"))
    }
    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), CpuError> {
        self.fd.set_regs(regs).map_err(kvm("KVM_SET_REGS"))
    }
    fn sregs(&self) -> Result<kvm_sregs, CpuError> {
        self.fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))
    }
    fn set_sregs(&mut self, sregs: &kvm_sregs) -> Result<(), CpuError> {
        self.fd.set_sregs(sregs).map_err(kvm("KVM_SET_SREGS"))
    }
    fn xsave(&self) -> Result<Vec<u8>, CpuError> {
        let mut out = Vec::with_capacity(self.region_len());
        match self.extra_words() {
            None => {
                let x = self.fd.get_xsave().map_err(kvm("KVM_GET_XSAVE"))?;
                words_to_bytes(&x.region, &mut out);
            }
            Some(extra) => {
                let mut x = self.buffer(extra)?;
                // SAFETY: `x` is a kvm_xsave followed by `extra` words, at least the
                // KVM_CAP_XSAVE2 bytes KVM_GET_XSAVE2 writes for this vCPU: the size only
                // grows with ARCH_REQ_XCOMP_GUEST_PERM, which the caller made (if at all)
                // before reading the capability.
                unsafe { self.fd.get_xsave2(&mut x) }.map_err(kvm("KVM_GET_XSAVE2"))?;
                words_to_bytes(&x.as_fam_struct_ref().xsave.region, &mut out);
                words_to_bytes(x.as_slice(), &mut out);
            }
        }
        out.truncate(self.region_len());
        Ok(out)
    }
    fn set_xsave(&mut self, xsave: &[u8]) -> Result<(), CpuError> {
        let want = self.region_len();
        if xsave.len() != want {
            return Err(CpuError::XsaveLength {
                got: xsave.len(),
                want,
            });
        }
        let (head, tail) = xsave.split_at(LEGACY_REGION);
        match self.extra_words() {
            None => {
                let mut x = kvm_xsave::default();
                bytes_to_words(head, &mut x.region);
                // SAFETY: KVM_SET_XSAVE reads the vCPU's region size from `x`; KVM_CAP_XSAVE2
                // said (or, absent, implies) that this is the 4096 bytes of a kvm_xsave.
                unsafe { self.fd.set_xsave(&x) }.map_err(kvm("KVM_SET_XSAVE"))
            }
            Some(extra) => {
                let mut x = self.buffer(extra)?;
                // SAFETY: only the region is written through this reference, not the
                // FAM length that `Xsave::new` set.
                bytes_to_words(head, &mut unsafe { x.as_mut_fam_struct() }.xsave.region);
                bytes_to_words(tail, x.as_mut_slice());
                // SAFETY: `x` holds the KVM_CAP_XSAVE2 bytes KVM_SET_XSAVE reads for this
                // vCPU (see `xsave`).
                unsafe { self.fd.set_xsave2(&x) }.map_err(kvm("KVM_SET_XSAVE"))
            }
        }
    }
    fn xsave_layout(&self) -> Result<XsaveLayout, CpuError> {
        let cpuid = self
            .fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("KVM_GET_CPUID2"))?;
        Ok(XsaveLayout::from_entries(cpuid.as_slice()))
    }
    fn xcr0(&self) -> Result<u64, CpuError> {
        let xcrs = self.fd.get_xcrs().map_err(kvm("KVM_GET_XCRS"))?;
        let n = (xcrs.nr_xcrs as usize).min(xcrs.xcrs.len());
        Ok(xcrs.xcrs[..n]
            .iter()
            .find(|x| x.xcr == 0)
            .map_or(1, |x| x.value))
    }
    fn events(&self) -> Result<kvm_vcpu_events, CpuError> {
        self.fd
            .get_vcpu_events()
            .map_err(kvm("KVM_GET_VCPU_EVENTS"))
    }
    fn set_events(&mut self, events: &kvm_vcpu_events) -> Result<(), CpuError> {
        self.fd
            .set_vcpu_events(events)
            .map_err(kvm("KVM_SET_VCPU_EVENTS"))
    }
    fn msr(&self, index: u32) -> Result<u64, CpuError> {
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .map_err(|_| CpuError::Msr(index))?;
        let n = self.fd.get_msrs(&mut msrs).map_err(kvm("KVM_GET_MSRS"))?;
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
        let n = self.fd.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
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
        self.fd
            .set_guest_debug(&debug)
            .map_err(kvm("KVM_SET_GUEST_DEBUG"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_bytes_round_trip_little_endian() {
        let mut bytes = Vec::new();
        words_to_bytes(&[0x0403_0201, 0x0807_0605], &mut bytes);
        assert_eq!(bytes, [1, 2, 3, 4, 5, 6, 7, 8]);
        let mut words = [0u32; 3];
        bytes_to_words(&[1, 2, 3, 4, 5, 6], &mut words);
        assert_eq!(words, [0x0403_0201, 0x0605, 0]);
    }
}
