//! One vCPU: its KVM set-up (CPUID, MSRs, registers, LAPIC) and the thread that runs it and
//! dispatches its exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kvm_bindings::{kvm_fpu, kvm_msr_entry, CpuId, Msrs};
use kvm_ioctls::{VcpuExit, VcpuFd};

use arch::cpu_state::{self, EntryMode};
use arch::cpuid::{filter_cpuid, CpuidConfig};
use arch::GuestMemory;
use devices::{Bus, ExitReason, VmExit};

use crate::diagnostics;
use crate::emulator_fixups::Fallback;
use crate::kick;
use crate::kvm_vcpu::KvmVcpu;

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("vCPU {id}: {what}: {source}")]
    Kvm {
        id: u8,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {id}: only {set} of {total} boot MSRs were accepted")]
    Msrs { id: u8, set: usize, total: usize },
    #[error("vCPU {0}: cannot set up boot CPU state: {1}")]
    CpuState(u8, #[source] cpu_state::CpuStateError),
}

/// LAPIC register offsets and delivery modes for LINT0/LINT1.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn set_apic_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Configure vCPU `id`. Only the boot processor (`entry` is `Some`) gets registers; the
/// others wait in the in-kernel LAPIC for INIT/SIPI from the guest.
pub fn configure(
    vcpu: &VcpuFd,
    id: u8,
    cpus: u8,
    supported_cpuid: &CpuId,
    tsc_deadline: bool,
    mem: &GuestMemory,
    entry: Option<EntryMode>,
) -> Result<(), VcpuError> {
    let kvm_err = |what| move |source| VcpuError::Kvm { id, what, source };
    let mut cpuid = supported_cpuid.clone();
    filter_cpuid(
        cpuid.as_mut_slice(),
        CpuidConfig {
            vcpu_id: id,
            cpus,
            tsc_deadline,
        },
    );
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;

    let entries: Vec<kvm_msr_entry> = arch::msr::boot_msrs()
        .into_iter()
        .map(|(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).expect("the boot MSR list fits a KVM MSR array");
    let set = vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
    if set != entries.len() {
        return Err(VcpuError::Msrs {
            id,
            set,
            total: entries.len(),
        });
    }

    let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
    for (offset, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
        let value = set_apic_delivery_mode(u32::from_le_bytes(bytes), mode);
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            lapic.regs[offset + i] = *b as _;
        }
    }
    vcpu.set_lapic(&lapic).map_err(kvm_err("KVM_SET_LAPIC"))?;

    if let Some(mode) = entry {
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        vcpu.set_fpu(&fpu).map_err(kvm_err("KVM_SET_FPU"))?;
        let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        cpu_state::setup_sregs(mem, mode, &mut sregs).map_err(|e| VcpuError::CpuState(id, e))?;
        vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
        vcpu.set_regs(&cpu_state::boot_regs(mode))
            .map_err(kvm_err("KVM_SET_REGS"))?;
    }
    Ok(())
}

/// What the run loop does after an exit, decided while `kvm_run` is borrowed.
enum Next {
    Continue,
    Exit(ExitReason),
    InternalError,
    Debug(String),
    Fault(String),
}

/// Everything a vCPU thread needs.
pub struct VcpuRunner {
    pub id: u8,
    pub vcpu: VcpuFd,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub mem: GuestMemory,
    pub exit: VmExit,
    pub stop: Arc<AtomicBool>,
    pub gate: Arc<crate::control::PauseGate>,
    /// The MSRs a snapshot saves (KVM_GET_MSR_INDEX_LIST).
    pub msr_indices: Arc<Vec<u32>>,
    /// KVM_CAP_XSAVE2 of the VM: the size of the vCPU's XSAVE region (0: 4096 bytes).
    pub xsave2_size: usize,
    /// Whether KVM's emulation failures fall back to vessel's emulator.
    pub fallback: Fallback,
}

impl VcpuRunner {
    /// Run until the VM stops or this vCPU ends it.
    pub fn run(mut self) {
        kick::set_thread_immediate_exit(&mut self.vcpu.get_kvm_run().immediate_exit);
        let mut save_round = 0;
        let mut first_run = true;
        while !self.stop.load(Ordering::Acquire) {
            let stop = &self.stop;
            let (vcpu, id, msrs) = (&mut self.vcpu, usize::from(self.id), &self.msr_indices);
            self.gate.wait_while_paused(
                || stop.load(Ordering::Acquire),
                id,
                &mut save_round,
                || crate::snapshot::save_vcpu(vcpu, id, msrs).map_err(|e| e.to_string()),
            );
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            if std::mem::take(&mut first_run) {
                let mut vcpu = KvmVcpu::new(&mut self.vcpu, self.xsave2_size);
                self.fallback.vcpu_starting(&mut vcpu, &self.mem);
            }
            let next = self.run_once();
            match next {
                Next::Continue => {}
                Next::Exit(reason) => {
                    self.exit.request(reason);
                    break;
                }
                Next::InternalError => {
                    if self.emulate_failed_instruction() {
                        continue;
                    }
                    let reason = ExitReason::Fault(self.internal_error_report());
                    self.exit.request(reason);
                    break;
                }
                Next::Debug(what) => {
                    let mut vcpu = KvmVcpu::new(&mut self.vcpu, self.xsave2_size);
                    if self.fallback.debug_exit(&mut vcpu, &self.mem) {
                        continue;
                    }
                    let report = format!(
                        "vCPU {}: {what}\n{}",
                        self.id,
                        diagnostics::describe_vcpu(&self.vcpu, &self.mem)
                    );
                    self.exit.request(ExitReason::Fault(report));
                    break;
                }
                Next::Fault(what) => {
                    let report = format!(
                        "vCPU {}: {what}\n{}",
                        self.id,
                        diagnostics::describe_vcpu(&self.vcpu, &self.mem)
                    );
                    self.exit.request(ExitReason::Fault(report));
                    break;
                }
            }
        }
        kick::set_thread_immediate_exit(std::ptr::null_mut());
    }

    fn run_once(&mut self) -> Next {
        match self.vcpu.run() {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    self.pio.read(u64::from(port), data);
                    Next::Continue
                }
                VcpuExit::IoOut(port, data) => {
                    if port == confine::hooks::HOOK_PORT && confine::hooks::port_write() {
                        return Next::Continue;
                    }
                    self.pio.write(u64::from(port), data);
                    Next::Continue
                }
                VcpuExit::MmioRead(addr, data) => {
                    self.mmio.read(addr, data);
                    Next::Continue
                }
                VcpuExit::MmioWrite(addr, data) => {
                    self.mmio.write(addr, data);
                    Next::Continue
                }
                VcpuExit::Shutdown => Next::Exit(ExitReason::TripleFault),
                VcpuExit::SystemEvent(kind, _) => match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Next::Exit(ExitReason::PowerOff),
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => Next::Exit(ExitReason::Reset),
                    other => Next::Fault(format!("KVM_EXIT_SYSTEM_EVENT of type {other} (guest crash)")),
                },
                VcpuExit::InternalError => Next::InternalError,
                VcpuExit::FailEntry(reason, cpu) => Next::Fault(format!(
                    "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on host CPU {cpu} \
                     (invalid guest state)"
                )),
                VcpuExit::Hlt => Next::Fault("KVM_EXIT_HLT without an in-kernel LAPIC".into()),
                VcpuExit::Debug(arch) => Next::Debug(format!("unhandled KVM exit {:?}", VcpuExit::Debug(arch))),
                other => Next::Fault(format!("unhandled KVM exit {other:?}")),
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.vcpu.set_kvm_immediate_exit(0);
                Next::Continue
            }
            Err(e) => Next::Fault(format!("KVM_RUN failed: {e}")),
        }
    }

    /// On an emulation failure, let vessel's emulator (when the VM's fallback is enabled)
    /// carry out the instruction KVM could not; true if it did and the vCPU can resume.
    fn emulate_failed_instruction(&mut self) -> bool {
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active
        // member of the kvm_run exit union.
        let internal = unsafe { self.vcpu.get_kvm_run().__bindgen_anon_1.internal };
        if internal.suberror != kvm_bindings::KVM_INTERNAL_ERROR_EMULATION {
            return false;
        }
        let mut vcpu = KvmVcpu::new(&mut self.vcpu, self.xsave2_size);
        match self.fallback.emulation_failure(&mut vcpu, &self.mem) {
            None => false,
            Some(Ok(_)) => true,
            Some(Err(e)) => {
                tracing::error!("vCPU {}: cannot emulate the instruction: {e}", self.id);
                if let Some(hint) = crate::emulator_fixups::nested_host_hint() {
                    tracing::info!("{hint}");
                }
                false
            }
        }
    }

    fn internal_error_report(&mut self) -> String {
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active
        // member of the kvm_run exit union.
        let internal = unsafe { self.vcpu.get_kvm_run().__bindgen_anon_1.internal };
        let ndata = (internal.ndata as usize).min(internal.data.len());
        let data: Vec<String> = internal.data[..ndata]
            .iter()
            .map(|d| format!("{d:#x}"))
            .collect();
        format!(
            "vCPU {}: KVM_EXIT_INTERNAL_ERROR (exit reason {}), suberror {} ({}), data [{}]\n{}",
            self.id,
            kvm_bindings::KVM_EXIT_INTERNAL_ERROR,
            internal.suberror,
            diagnostics::suberror_name(internal.suberror),
            data.join(", "),
            diagnostics::describe_vcpu(&self.vcpu, &self.mem)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_mode_replaces_bits_8_to_10() {
        assert_eq!(
            set_apic_delivery_mode(0x0001_0700, APIC_MODE_NMI),
            0x0001_0400
        );
        assert_eq!(set_apic_delivery_mode(0, APIC_MODE_EXTINT), 0x700);
    }
}
