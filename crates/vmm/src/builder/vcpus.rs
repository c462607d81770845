//! The vCPUs of a new VM: created, given CPUID and their registers (the boot vCPU its
//! entry state), or the states a snapshot saved; each wrapped in the runner its thread
//! will drive.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, Kvm, VmFd};

use arch::cpu_state::EntryMode;
use arch::GuestMemory;
use devices::VmExit;

use crate::config::VmConfig;
use crate::control::PauseGate;
use crate::device_manager::DeviceManager;
use crate::error::{kvm_err, VmError};
use crate::vcpu::{self, VcpuRunner};

/// The runners, and what they share with the rest of the VM.
pub(crate) struct Vcpus {
    pub runners: Vec<VcpuRunner>,
    pub stop: Arc<AtomicBool>,
    pub gate: Arc<PauseGate>,
    /// KVM_CAP_XSAVE2: the size of each vCPU's XSAVE region (0: 4096 bytes).
    pub xsave2_size: usize,
}

/// What every vCPU is created with.
pub(crate) struct VcpuArgs<'a> {
    pub kvm: &'a Kvm,
    pub vm: &'a VmFd,
    pub cfg: &'a VmConfig,
    pub mem: &'a GuestMemory,
    pub devices: &'a DeviceManager,
    pub exit: &'a VmExit,
}

impl Vcpus {
    /// Creates `cfg.machine.cpus` vCPUs; vCPU 0 starts at `entry` when given.
    pub fn create(args: VcpuArgs<'_>, entry: Option<EntryMode>) -> Result<Self, VmError> {
        let VcpuArgs {
            kvm,
            vm,
            cfg,
            mem,
            devices,
            exit,
        } = args;
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
        let msr_indices = Arc::new(
            kvm.get_msr_index_list()
                .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?
                .as_slice()
                .to_vec(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(PauseGate::default());
        let xsave2_size = usize::try_from(vm.check_extension_int(Cap::Xsave2)).unwrap_or(0);
        let fallback = cfg.host.emulator_fixups.fallback();
        let mut runners = Vec::with_capacity(usize::from(cfg.machine.cpus));
        for id in 0..cfg.machine.cpus {
            let fd = vm
                .create_vcpu(u64::from(id))
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            let entry = if id == 0 { entry } else { None };
            vcpu::configure(
                &fd,
                id,
                cfg.machine.cpus,
                &supported,
                tsc_deadline,
                mem,
                entry,
            )?;
            runners.push(VcpuRunner {
                id,
                vcpu: fd,
                pio: devices.pio.clone(),
                mmio: devices.mmio.clone(),
                mem: mem.clone(),
                exit: exit.clone(),
                stop: stop.clone(),
                gate: gate.clone(),
                msr_indices: msr_indices.clone(),
                xsave2_size,
                fallback,
            });
        }
        Ok(Self {
            runners,
            stop,
            gate,
            xsave2_size,
        })
    }

    /// Gives the VM-wide KVM state (irqchip, PIT, clock) and every vCPU the states
    /// `snapshot` saved.
    pub fn restore(
        &self,
        vm: &VmFd,
        snapshot: &crate::snapshot::VmSnapshot,
    ) -> Result<(), VmError> {
        snapshot.vm.restore(vm)?;
        for (runner, state) in self.runners.iter().zip(&snapshot.vcpus) {
            crate::snapshot::restore_vcpu(
                &runner.vcpu,
                usize::from(runner.id),
                state,
                self.xsave2_size,
            )?;
        }
        Ok(())
    }
}
