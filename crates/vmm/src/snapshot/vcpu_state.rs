//! One vCPU's architectural state, saved on its own thread while the VM is paused and
//! restored into a fresh vCPU before it first runs.

use kvm_bindings::{
    kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs, KVM_MAX_MSR_ENTRIES,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

use super::SnapshotError;

/// Most MSRs a state file may list for one vCPU (KVM reports a few hundred at most).
pub const MAX_MSRS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsrValue {
    pub index: u32,
    pub data: u64,
}

/// The x87/SSE/AVX registers are in `xsave` (KVM_GET_FPU holds nothing more).
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    #[serde(with = "super::bytes")]
    pub regs: kvm_regs,
    #[serde(with = "super::bytes")]
    pub sregs: kvm_sregs,
    #[serde(with = "super::bytes")]
    pub xsave: kvm_xsave,
    #[serde(with = "super::bytes")]
    pub xcrs: kvm_xcrs,
    #[serde(with = "super::bytes")]
    pub lapic: kvm_lapic_state,
    #[serde(with = "super::bytes")]
    pub mp_state: kvm_mp_state,
    #[serde(with = "super::bytes")]
    pub vcpu_events: kvm_vcpu_events,
    #[serde(with = "super::bytes")]
    pub debugregs: kvm_debugregs,
    pub msrs: Vec<MsrValue>,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState")
            .field("rip", &self.regs.rip)
            .field("msrs", &self.msrs.len())
            .finish_non_exhaustive()
    }
}

/// Reads every MSR of `indices` that KVM_GET_MSRS accepts (KVM stops at the first one it
/// refuses; that one is skipped and reading goes on after it).
fn read_msrs(vcpu: &VcpuFd, id: usize, indices: &[u32]) -> Result<Vec<MsrValue>, SnapshotError> {
    let kvm_err = |what| move |source| SnapshotError::VcpuKvm { id, what, source };
    let mut out = Vec::with_capacity(indices.len());
    let mut next = 0;
    while next < indices.len() {
        let chunk = &indices[next..indices.len().min(next + KVM_MAX_MSR_ENTRIES)];
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| SnapshotError::Msrs {
            id,
            set: 0,
            total: entries.len(),
        })?;
        let read = vcpu.get_msrs(&mut msrs).map_err(kvm_err("KVM_GET_MSRS"))?;
        out.extend(
            msrs.as_slice()[..read.min(chunk.len())]
                .iter()
                .map(|e| MsrValue {
                    index: e.index,
                    data: e.data,
                }),
        );
        // The entry at `read` was refused (or the chunk is done).
        next += read + usize::from(read < chunk.len());
    }
    Ok(out)
}

/// Saves vCPU `id`. Runs on the vCPU's thread, which is paused outside KVM_RUN: a KVM_RUN
/// with `immediate_exit` first completes an I/O instruction whose exit was just handled
/// (the result of an IN, the RIP advance of an OUT), which KVM does on the next KVM_RUN.
/// KVM_GET_MP_STATE goes first (it may update the LAPIC), KVM_GET_VCPU_EVENTS last.
pub(crate) fn save_vcpu(
    vcpu: &mut VcpuFd,
    id: usize,
    msr_indices: &[u32],
) -> Result<VcpuState, SnapshotError> {
    let kvm_err = |what| move |source| SnapshotError::VcpuKvm { id, what, source };
    vcpu.set_kvm_immediate_exit(1);
    let completed = vcpu.run().map(|_| ());
    vcpu.set_kvm_immediate_exit(0);
    match completed {
        Err(e) if e.errno() != libc::EINTR && e.errno() != libc::EAGAIN => {
            return Err(kvm_err("KVM_RUN (completing pending I/O)")(e))
        }
        _ => {}
    }
    let mp_state = vcpu.get_mp_state().map_err(kvm_err("KVM_GET_MP_STATE"))?;
    let regs = vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
    let sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    let xsave = vcpu.get_xsave().map_err(kvm_err("KVM_GET_XSAVE"))?;
    let xcrs = vcpu.get_xcrs().map_err(kvm_err("KVM_GET_XCRS"))?;
    let debugregs = vcpu
        .get_debug_regs()
        .map_err(kvm_err("KVM_GET_DEBUGREGS"))?;
    let lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
    let msrs = read_msrs(vcpu, id, msr_indices)?;
    let vcpu_events = vcpu
        .get_vcpu_events()
        .map_err(kvm_err("KVM_GET_VCPU_EVENTS"))?;
    Ok(VcpuState {
        regs,
        sregs,
        xsave,
        xcrs,
        lapic,
        mp_state,
        vcpu_events,
        debugregs,
        msrs,
    })
}

/// Size of the legacy XSAVE area KVM_GET_XSAVE/KVM_SET_XSAVE use.
pub const XSAVE_AREA_SIZE: usize = std::mem::size_of::<kvm_xsave>();

/// Restores vCPU `id` (already given its CPUID) in Firecracker's order: registers and
/// special registers, extended state, debug registers, LAPIC, then MSRs (a TSC-deadline
/// write needs the LAPIC in that mode), and the MP state and pending events last.
pub(crate) fn restore_vcpu(
    vcpu: &VcpuFd,
    id: usize,
    state: &VcpuState,
    xsave2_size: usize,
) -> Result<(), SnapshotError> {
    let kvm_err = |what| move |source| SnapshotError::VcpuKvm { id, what, source };
    if xsave2_size > XSAVE_AREA_SIZE {
        return Err(SnapshotError::XsaveTooLarge(id));
    }
    vcpu.set_regs(&state.regs)
        .map_err(kvm_err("KVM_SET_REGS"))?;
    vcpu.set_sregs(&state.sregs)
        .map_err(kvm_err("KVM_SET_SREGS"))?;
    // SAFETY: KVM reads at most its XSAVE size from the buffer, and `xsave2_size` (what
    // KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) reports for this VM) was checked to fit the
    // 4096-byte `kvm_xsave` above.
    unsafe { vcpu.set_xsave(&state.xsave) }.map_err(kvm_err("KVM_SET_XSAVE"))?;
    vcpu.set_xcrs(&state.xcrs)
        .map_err(kvm_err("KVM_SET_XCRS"))?;
    vcpu.set_debug_regs(&state.debugregs)
        .map_err(kvm_err("KVM_SET_DEBUGREGS"))?;
    vcpu.set_lapic(&state.lapic)
        .map_err(kvm_err("KVM_SET_LAPIC"))?;
    for chunk in state.msrs.chunks(KVM_MAX_MSR_ENTRIES) {
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|m| kvm_msr_entry {
                index: m.index,
                data: m.data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|_| SnapshotError::Msrs {
            id,
            set: 0,
            total: entries.len(),
        })?;
        let set = vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
        if set != entries.len() {
            return Err(SnapshotError::Msrs {
                id,
                set,
                total: entries.len(),
            });
        }
    }
    vcpu.set_mp_state(state.mp_state)
        .map_err(kvm_err("KVM_SET_MP_STATE"))?;
    vcpu.set_vcpu_events(&state.vcpu_events)
        .map_err(kvm_err("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}
