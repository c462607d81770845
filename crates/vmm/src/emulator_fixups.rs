//! When vessel's instruction emulator ([`x86_emulator`]) stands in for the host's KVM.
//!
//! The emulator and its user-mode `syscall` fix-up exist for kvm_pvm, the software nested
//! KVM whose instruction emulator lacks instructions Linux executes (docs/nested-kvm.md).
//! Elsewhere an emulation failure is reported as the guest's fault, as KVM reported it. The
//! VM's [`EmulatorFixups`] decides: `auto` (the default) enables the fallback only where
//! `/dev/kvm` is kvm_pvm, `on` and `off` force it. [`Fallback`] is the decision a vCPU
//! thread acts on.

use x86_emulator::{EmulationError, GuestMemory, Outcome, VcpuState};

/// Whether the host's `/dev/kvm` is kvm_pvm (software nested KVM, guest ring 0 emulated).
pub fn host_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// A hint for the user when the host's `/dev/kvm` is kvm_pvm and an instruction could not
/// be emulated: stock kernels boot there with the nested-host profile of docs/nested-kvm.md.
pub fn nested_host_hint() -> Option<&'static str> {
    host_is_pvm().then_some(
        "this host's /dev/kvm is kvm_pvm, a software nested KVM that emulates guest ring 0; \
         Linux boots there with the nested-host profile (ELF vmlinux, 1 vCPU, \
         scripts/nested-host.cmdline): see docs/nested-kvm.md",
    )
}

/// A value that is not auto, on or off.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid emulator-fixups '{0}': expected auto, on or off")]
pub struct ParseError(String);

/// Whether a VM's vCPUs fall back to vessel's emulator (and arm its `syscall` fix-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmulatorFixups {
    /// Only where `/dev/kvm` is kvm_pvm.
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for EmulatorFixups {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "auto" => Ok(EmulatorFixups::Auto),
            "on" => Ok(EmulatorFixups::On),
            "off" => Ok(EmulatorFixups::Off),
            _ => Err(ParseError(s.to_string())),
        }
    }
}

impl EmulatorFixups {
    /// The decision on a host that is (or is not) kvm_pvm.
    pub fn enabled_on(self, host_is_pvm: bool) -> bool {
        match self {
            EmulatorFixups::On => true,
            EmulatorFixups::Off => false,
            EmulatorFixups::Auto => host_is_pvm,
        }
    }

    /// The decision on this host.
    pub fn fallback(self) -> Fallback {
        let pvm = host_is_pvm();
        let enabled = self.enabled_on(pvm);
        tracing::debug!(
            "emulator fix-ups {self:?}: host kvm_pvm {pvm}, fallback enabled {enabled}"
        );
        Fallback { enabled }
    }
}

/// What a vCPU does on KVM's emulation failures and debug exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback {
    enabled: bool,
}

impl Fallback {
    pub fn enabled(self) -> bool {
        self.enabled
    }

    /// Emulate the instruction KVM could not (arming the `syscall` fix-up); `None` when the
    /// fallback is off, leaving the vCPU untouched.
    pub fn emulation_failure(
        self,
        vcpu: &mut dyn VcpuState,
        mem: &GuestMemory,
    ) -> Option<Result<Outcome, EmulationError>> {
        self.enabled
            .then(|| x86_emulator::emulate_reporting(vcpu, mem))
    }

    /// Before a vCPU's first run: arm the `syscall` fix-up at once when the guest already
    /// uses `syscall` (a restored or migrated VM), rather than at its first emulation exit,
    /// which may come after its first `syscall` (nothing when the fallback is off).
    pub fn vcpu_starting(self, vcpu: &mut dyn VcpuState, mem: &GuestMemory) {
        if self.enabled {
            // Best effort, as at an emulation exit: a guest without a usable IDT yet (a
            // fresh boot) gets the breakpoint at a later exit.
            let _ = x86_emulator::arm_syscall_fixup(vcpu, mem);
        }
    }

    /// Handle KVM_EXIT_DEBUG from the fix-up's breakpoint; false when the exit is not
    /// vessel's (always, when the fallback is off).
    pub fn debug_exit(self, vcpu: &mut dyn VcpuState, mem: &GuestMemory) -> bool {
        self.enabled && x86_emulator::handle_debug_exit(vcpu, mem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};
    use x86_emulator::test_support::{long_mode_sregs, FakeVcpu, PageTables};
    use x86_emulator::GuestDebug;

    #[test]
    fn auto_enables_the_fallback_on_kvm_pvm_only() {
        assert!(EmulatorFixups::Auto.enabled_on(true));
        assert!(!EmulatorFixups::Auto.enabled_on(false));
        assert!(EmulatorFixups::On.enabled_on(false));
        assert!(!EmulatorFixups::Off.enabled_on(true));
    }

    #[test]
    fn parses_auto_on_off_and_refuses_the_rest() {
        assert_eq!("auto".parse(), Ok(EmulatorFixups::Auto));
        assert_eq!("on".parse(), Ok(EmulatorFixups::On));
        assert_eq!("off".parse(), Ok(EmulatorFixups::Off));
        let err = "yes".parse::<EmulatorFixups>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid emulator-fixups 'yes': expected auto, on or off"
        );
    }

    const IDT: u64 = 0x2000;
    const CODE: u64 = 0x3000;
    const HANDLER: u64 = 0xffff_ffff_8100_0a00;

    /// A 64-bit guest that uses `syscall` (EFER.SCE, LSTAR) and has a #PF gate, stopped on
    /// `swapgs`, an instruction kvm_pvm hands back.
    fn guest() -> (FakeVcpu, GuestMemory) {
        let mut pt = PageTables::new();
        pt.identity(0x10_0000);
        let mem = pt.mem();
        let lo = (HANDLER & 0xffff) | 0x10 << 16 | 0x8e << 40 | (HANDLER >> 16 & 0xffff) << 48;
        mem.write_obj(lo, GuestAddress(IDT + 14 * 16)).unwrap();
        mem.write_obj(HANDLER >> 32, GuestAddress(IDT + 14 * 16 + 8))
            .unwrap();
        mem.write_slice(&[0x0f, 0x01, 0xf8], GuestAddress(CODE))
            .unwrap();
        let mut cpu = FakeVcpu {
            sregs: long_mode_sregs(pt.cr3()),
            ..Default::default()
        };
        cpu.sregs.idt.base = IDT;
        cpu.sregs.idt.limit = 0xfff;
        cpu.regs.rip = CODE;
        cpu.regs.rflags = 2;
        for (msr, value) in [
            (0xc000_0080, 0xd01),
            (0xc000_0081, 0x0023_0010_0000_0000),
            (0xc000_0082, 0xffff_ffff_81c0_0080),
            (0xc000_0084, 0x4_7700),
            (0xc000_0101, 0),
            (0xc000_0102, 0),
        ] {
            cpu.msrs.insert(msr, value);
        }
        (cpu, mem)
    }

    #[test]
    fn off_leaves_the_vcpu_untouched_and_the_fixup_unarmed() {
        let (mut cpu, mem) = guest();
        let fallback = Fallback { enabled: false };
        assert!(fallback.emulation_failure(&mut cpu, &mem).is_none());
        assert_eq!(cpu.debug, None);
        assert_eq!(cpu.regs.rip, CODE);
        assert!(!fallback.debug_exit(&mut cpu, &mem));
    }

    #[test]
    fn auto_on_a_host_that_is_not_pvm_does_not_arm_the_fixup() {
        let (mut cpu, mem) = guest();
        let fallback = Fallback {
            enabled: EmulatorFixups::Auto.enabled_on(false),
        };
        assert!(fallback.emulation_failure(&mut cpu, &mem).is_none());
        assert_eq!(cpu.debug, None);
    }

    #[test]
    fn a_restored_guest_that_uses_syscall_is_armed_before_its_first_run() {
        let (mut cpu, mem) = guest();
        Fallback { enabled: false }.vcpu_starting(&mut cpu, &mem);
        assert_eq!(cpu.debug, None);
        Fallback { enabled: true }.vcpu_starting(&mut cpu, &mem);
        assert_eq!(cpu.debug, Some(GuestDebug::Breakpoint(HANDLER)));
        assert_eq!(cpu.regs.rip, CODE, "nothing is emulated");
        // A guest booting from scratch (no IDT yet): nothing to arm.
        let (mut fresh, mem) = guest();
        fresh.sregs.idt.limit = 0;
        std::thread::spawn(move || {
            Fallback { enabled: true }.vcpu_starting(&mut fresh, &mem);
            assert_eq!(fresh.debug, None);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn on_emulates_and_arms_the_fixup() {
        let (mut cpu, mem) = guest();
        let fallback = Fallback {
            enabled: EmulatorFixups::Auto.enabled_on(true),
        };
        let outcome = fallback.emulation_failure(&mut cpu, &mem).unwrap().unwrap();
        assert_eq!(outcome.mnemonic(), "swapgs");
        assert_eq!(cpu.regs.rip, CODE + 3);
        assert_eq!(cpu.debug, Some(GuestDebug::Breakpoint(HANDLER)));
    }
}
