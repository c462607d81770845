//! CPUID the guest sees: KVM_GET_SUPPORTED_CPUID, adjusted per vCPU for its APIC id and the
//! VM's topology (one socket, `cpus` cores, one thread per core), as production VMMs do.

use kvm_bindings::kvm_cpuid_entry2;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_THERMAL_POWER: u32 = 0x6;
const LEAF_PMU: u32 = 0xa;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;

const ECX_HYPERVISOR: u32 = 1 << 31;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const EDX_HTT: u32 = 1 << 28;

/// Topology level types in leaves 0xB / 0x1F.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// What the per-vCPU CPUID depends on.
#[derive(Debug, Clone, Copy)]
pub struct CpuidConfig {
    pub vcpu_id: u8,
    pub cpus: u8,
    /// KVM emulates the TSC-deadline timer of the in-kernel LAPIC (KVM_CAP_TSC_DEADLINE_TIMER).
    pub tsc_deadline: bool,
}

/// Bits needed to hold `n` distinct ids.
fn id_bits(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Adjust the supported-CPUID entries in place for one vCPU.
pub fn filter_cpuid(entries: &mut [kvm_cpuid_entry2], cfg: CpuidConfig) {
    let cpus = u32::from(cfg.cpus.max(1));
    let apic_id = u32::from(cfg.vcpu_id);
    for e in entries.iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                // EBX: APIC id, logical processors per package, CLFLUSH line size (8 × 8 bytes).
                e.ebx = (apic_id << 24) | (cpus << 16) | (8 << 8) | (e.ebx & 0xff);
                e.ecx |= ECX_HYPERVISOR;
                if cfg.tsc_deadline {
                    e.ecx |= ECX_TSC_DEADLINE;
                } else {
                    e.ecx &= !ECX_TSC_DEADLINE;
                }
                if cpus > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing the cache - 1.
                let cache_level = (e.eax >> 5) & 0x7;
                let sharing = if cache_level >= 3 { cpus - 1 } else { 0 };
                e.eax = (e.eax & 0x3ff) | ((sharing & 0xfff) << 14) | ((cpus - 1) << 26);
            }
            LEAF_THERMAL_POWER => {
                // No turbo / power-management knobs in a VM.
                e.eax &= !(1 << 1);
                e.ecx &= !(1 << 3);
            }
            LEAF_PMU => {
                // vessel does not virtualise performance counters.
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => {
                let (shift, count, level) = match e.index {
                    0 => (0, 1, LEVEL_SMT),
                    1 => (id_bits(cpus), cpus, LEVEL_CORE),
                    _ => (0, 0, 0),
                };
                e.eax = shift;
                e.ebx = count;
                e.ecx = (level << 8) | (e.index & 0xff);
                e.edx = apic_id;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn leaf1_carries_apic_id_and_count() {
        let mut es = [entry(1, 0)];
        filter_cpuid(
            &mut es,
            CpuidConfig {
                vcpu_id: 3,
                cpus: 4,
                tsc_deadline: true,
            },
        );
        assert_eq!(es[0].ebx >> 24, 3);
        assert_eq!((es[0].ebx >> 16) & 0xff, 4);
        assert_ne!(es[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(es[0].ecx & ECX_TSC_DEADLINE, 0);
        assert_ne!(es[0].edx & EDX_HTT, 0);
    }

    #[test]
    fn extended_topology_describes_one_socket() {
        let mut es = [entry(0xb, 0), entry(0xb, 1), entry(0xb, 2)];
        filter_cpuid(
            &mut es,
            CpuidConfig {
                vcpu_id: 2,
                cpus: 3,
                tsc_deadline: false,
            },
        );
        assert_eq!(
            (es[0].eax, es[0].ebx, es[0].ecx >> 8, es[0].edx),
            (0, 1, LEVEL_SMT, 2)
        );
        assert_eq!(
            (es[1].eax, es[1].ebx, es[1].ecx >> 8, es[1].edx),
            (2, 3, LEVEL_CORE, 2)
        );
        assert_eq!((es[2].ebx, es[2].ecx), (0, 2));
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!([1, 2, 3, 4, 5, 8, 9].map(id_bits), [0, 1, 2, 2, 3, 3, 4]);
    }
}
