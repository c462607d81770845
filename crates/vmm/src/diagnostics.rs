//! Human-readable reports of vCPU faults: exit reason, registers and the instruction bytes
//! at RIP, read through the guest's page tables.

use std::fmt::Write as _;

use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use arch::GuestMemory;

const X86_CR0_PG: u64 = 1 << 31;
const MAX_INSTRUCTION_LEN: usize = 15;

/// Name of a KVM internal-error suberror.
pub fn suberror_name(suberror: u32) -> &'static str {
    match suberror {
        kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => "emulation failure",
        kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
        kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
        kvm_bindings::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON => "unexpected hardware exit",
        _ => "unknown",
    }
}

/// Linear address of the instruction pointer.
pub fn linear_rip(regs: &kvm_regs, sregs: &kvm_sregs) -> u64 {
    if sregs.cs.l == 1 {
        regs.rip
    } else {
        sregs.cs.base.wrapping_add(regs.rip & 0xffff_ffff) & 0xffff_ffff
    }
}

/// Format up to 15 bytes from `mem` at guest-physical `phys`, or say why they are unreadable.
pub fn instruction_bytes(mem: &GuestMemory, phys: u64) -> String {
    let mut buf = [0u8; MAX_INSTRUCTION_LEN];
    let mut n = 0;
    while n < buf.len()
        && mem
            .read_slice(&mut buf[n..n + 1], GuestAddress(phys + n as u64))
            .is_ok()
    {
        n += 1;
    }
    if n == 0 {
        return format!("unreadable (guest-physical {phys:#x} is not RAM)");
    }
    buf[..n]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Registers and code at RIP of a stopped vCPU, one line per item.
pub fn describe_vcpu(vcpu: &VcpuFd, mem: &GuestMemory) -> String {
    let mut s = String::new();
    let (Ok(regs), Ok(sregs)) = (vcpu.get_regs(), vcpu.get_sregs()) else {
        return "  (registers unavailable)\n".into();
    };
    let _ = writeln!(
        s,
        "  RIP {:#018x}  RSP {:#018x}  RFLAGS {:#x}\n  RAX {:#x} RBX {:#x} RCX {:#x} RDX {:#x} RSI {:#x} RDI {:#x}",
        regs.rip, regs.rsp, regs.rflags, regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi
    );
    let _ = writeln!(
        s,
        "  CS {:#x} (base {:#x}, L={} D={})  CR0 {:#x} CR3 {:#x} CR4 {:#x} EFER {:#x}",
        sregs.cs.selector,
        sregs.cs.base,
        sregs.cs.l,
        sregs.cs.db,
        sregs.cr0,
        sregs.cr3,
        sregs.cr4,
        sregs.efer
    );
    let linear = linear_rip(&regs, &sregs);
    let phys = if sregs.cr0 & X86_CR0_PG != 0 {
        match vcpu.translate_gva(linear) {
            Ok(t) if t.valid != 0 => Some(t.physical_address),
            _ => None,
        }
    } else {
        Some(linear)
    };
    match phys {
        Some(p) => {
            let _ = writeln!(
                s,
                "  instruction bytes at {linear:#x} (guest-physical {p:#x}): {}",
                instruction_bytes(mem, p)
            );
        }
        None => {
            let _ = writeln!(s, "  instruction bytes at {linear:#x}: unreadable (not mapped by the guest's page tables)");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_rip_uses_cs_base_outside_long_mode() {
        let regs = kvm_regs {
            rip: 0x10,
            ..Default::default()
        };
        let mut sregs = kvm_sregs::default();
        sregs.cs.base = 0xf0000;
        assert_eq!(linear_rip(&regs, &sregs), 0xf0010);
        sregs.cs.l = 1;
        assert_eq!(linear_rip(&regs, &sregs), 0x10);
    }

    #[test]
    fn instruction_bytes_stop_at_the_end_of_ram() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        mem.write_slice(&[0x0f, 0x0b], GuestAddress(0xffe)).unwrap();
        assert_eq!(instruction_bytes(&mem, 0xffe), "0f 0b");
        assert!(instruction_bytes(&mem, 0x5000).starts_with("unreadable"));
        assert_eq!(suberror_name(1), "emulation failure");
    }
}
