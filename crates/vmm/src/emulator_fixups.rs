//! When vessel's instruction emulator ([`x86_emulator`]) stands in for the host's KVM: on
//! hosts whose `/dev/kvm` is kvm_pvm, the software nested KVM the emulator exists for.

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
