//! Where the XSAVE state components lie, from CPUID leaf 0DH.
//!
//! Sub-leaf 0 gives the user components XCR0 may enable (EDX:EAX) and the size of the
//! standard-format area for all of them (ECX); sub-leaf 1 says whether the compacted form
//! (XSAVEC, EAX bit 1) and extended feature disable (XFD, EAX bit 4) exist; sub-leaf i
//! (2 <= i <= 62) gives component i's size (EAX), standard-format offset (EBX), and in ECX
//! whether it is a supervisor component (bit 0), starts 64-byte aligned in the compacted
//! form (bit 1), and can be disabled through IA32_XFD (bit 2).
//!
//! The emulator takes the layout from the CPUID the guest was given (KVM_GET_CPUID2), which
//! is what the guest itself sizes its buffers by. KVM passes the host's sub-leaves 2..62
//! through unchanged, so the same offsets describe KVM's standard-format XSAVE region.
//! Tests inject any layout, e.g. an AMX one, through the fake vCPU.
//!
//! CPUID values are not trusted to be sane: a component that would overlap the legacy area
//! or the header, or end past sub-leaf 0's ECX (itself capped at [`MAX_AREA`]), is left
//! undescribed, and an XCR0 that enables an undescribed component is refused by the emulator.

use kvm_bindings::kvm_cpuid_entry2;

/// Offset of the XSAVE header (after the 512-byte legacy area).
pub const HEADER: usize = 512;
/// Offset of the extended region (after the 64-byte header).
pub const EXTENDED: usize = 576;
/// The largest XSAVE area believed (today's largest, with AMX, is 11008 bytes).
pub const MAX_AREA: usize = 1 << 20;
/// Components 0 (x87) and 1 (SSE), which live in the legacy area.
pub const LEGACY_COMPONENTS: u64 = 0b11;
/// Components 2..=62 may have a sub-leaf; bit 63 of a state-component bitmap is reserved.
const LAST_COMPONENT: u32 = 62;
const LEAF: u32 = 0xd;

/// One extended state component (i >= 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    /// Offset in the standard format (CPUID.(0DH,i).EBX).
    pub offset: usize,
    /// Size in bytes (CPUID.(0DH,i).EAX).
    pub size: usize,
    /// 64-byte aligned in the compacted format (CPUID.(0DH,i).ECX bit 1).
    pub align64: bool,
    /// IA32_XFD can disable it (CPUID.(0DH,i).ECX bit 2, with XFD supported).
    pub xfd: bool,
}

impl Component {
    /// The byte range at `start` (the component's offset in some format).
    pub fn at(&self, start: usize) -> std::ops::Range<usize> {
        start..start + self.size
    }
}

/// The XSAVE layout CPUID leaf 0DH describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XsaveLayout {
    /// CPUID.(0DH,0).EDX:EAX, with x87 always present.
    supported: u64,
    /// CPUID.(0DH,0).ECX, between [`EXTENDED`] and [`MAX_AREA`].
    max_size: usize,
    xsavec: bool,
    components: Vec<Option<Component>>,
}

impl XsaveLayout {
    /// The layout from a CPUID function `(leaf, sub-leaf) -> [eax, ebx, ecx, edx]`.
    pub fn from_cpuid(cpuid: impl Fn(u32, u32) -> [u32; 4]) -> Self {
        let [eax0, _, ecx0, edx0] = cpuid(LEAF, 0);
        let supported = (u64::from(edx0) << 32 | u64::from(eax0)) | 1;
        let max_size = (ecx0 as usize).clamp(EXTENDED, MAX_AREA);
        let [eax1, ..] = cpuid(LEAF, 1);
        let xsavec = eax1 & (1 << 1) != 0;
        let xfd = eax1 & (1 << 4) != 0;
        let components = (0..=LAST_COMPONENT)
            .map(|i| {
                if i < 2 || supported & (1 << i) == 0 {
                    return None;
                }
                let [size, offset, flags, _] = cpuid(LEAF, i);
                let (size, offset) = (size as usize, offset as usize);
                let user = flags & 1 == 0;
                let fits = size > 0 && offset >= EXTENDED && offset + size <= max_size;
                (user && fits).then_some(Component {
                    offset,
                    size,
                    align64: flags & (1 << 1) != 0,
                    xfd: xfd && flags & (1 << 2) != 0,
                })
            })
            .collect();
        XsaveLayout {
            supported,
            max_size,
            xsavec,
            components,
        }
    }

    /// The layout of a vCPU's CPUID entries (KVM_GET_CPUID2); a CPUID without leaf 0DH
    /// describes only the legacy area.
    pub fn from_entries(entries: &[kvm_cpuid_entry2]) -> Self {
        Self::from_cpuid(|leaf, sub| {
            entries
                .iter()
                .find(|e| e.function == leaf && e.index == sub)
                .map_or([0; 4], |e| [e.eax, e.ebx, e.ecx, e.edx])
        })
    }

    /// The layout of the CPU this process runs on.
    pub fn host() -> Self {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        let has_leaf = __cpuid(0).eax >= LEAF;
        let has_xsave = has_leaf && __cpuid(1).ecx & (1 << 26) != 0;
        Self::from_cpuid(|leaf, sub| {
            if !has_xsave {
                return [0; 4];
            }
            let r = __cpuid_count(leaf, sub);
            [r.eax, r.ebx, r.ecx, r.edx]
        })
    }

    /// Component `i` (2..=62), when CPUID describes it.
    pub fn component(&self, i: u32) -> Option<Component> {
        self.components.get(i as usize).copied().flatten()
    }

    /// The described extended components of `mask`, in index order.
    pub fn extended(&self, mask: u64) -> impl Iterator<Item = (u32, Component)> + '_ {
        (2..=LAST_COMPONENT)
            .filter(move |i| mask & (1 << i) != 0)
            .filter_map(|i| Some((i, self.component(i)?)))
    }

    /// The components of `mask` CPUID does not describe (none of 0 and 1).
    pub fn undescribed(&self, mask: u64) -> u64 {
        let described = self
            .extended(mask)
            .fold(LEGACY_COMPONENTS, |m, (i, _)| m | 1 << i);
        mask & !described
    }

    /// The user components XCR0 may enable (CPUID.(0DH,0).EDX:EAX).
    pub fn supported(&self) -> u64 {
        self.supported
    }

    /// Size of a standard-format area for every supported component (CPUID.(0DH,0).ECX).
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Whether the compacted form (XSAVEC, compacted XRSTOR) exists.
    pub fn xsavec(&self) -> bool {
        self.xsavec
    }

    /// The components IA32_XFD can disable.
    pub fn xfd_capable(&self) -> u64 {
        self.extended(u64::MAX)
            .filter(|(_, c)| c.xfd)
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    /// Bytes a standard-format area holding the components of `mask` spans.
    pub fn standard_size(&self, mask: u64) -> usize {
        self.extended(mask)
            .map(|(_, c)| c.offset + c.size)
            .fold(EXTENDED, usize::max)
    }

    /// The components of `mask` with their offsets in the compacted format: one after the
    /// other from [`EXTENDED`] in index order, 64-byte aligned where CPUID says so.
    pub fn compacted(&self, mask: u64) -> Vec<(u32, Component, usize)> {
        let mut offset = EXTENDED;
        self.extended(mask)
            .map(|(i, c)| {
                if c.align64 {
                    offset = offset.next_multiple_of(64);
                }
                let at = offset;
                offset += c.size;
                (i, c, at)
            })
            .collect()
    }

    /// Bytes a compacted-format area holding the components of `mask` spans.
    pub fn compacted_size(&self, mask: u64) -> usize {
        self.compacted(mask)
            .last()
            .map_or(EXTENDED, |&(_, c, at)| at + c.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{sapphire_rapids_cpuid, SPR_XCR0};

    #[test]
    fn amx_layout_from_cpuid() {
        let l = XsaveLayout::from_cpuid(sapphire_rapids_cpuid);
        assert_eq!(l.supported(), SPR_XCR0);
        assert_eq!(l.max_size(), 11008);
        assert!(l.xsavec());
        assert_eq!(
            l.component(18),
            Some(Component {
                offset: 2816,
                size: 8192,
                align64: true,
                xfd: true
            })
        );
        assert_eq!(l.xfd_capable(), 1 << 18);
        assert_eq!(l.undescribed(SPR_XCR0), 0);
        assert_eq!(
            l.undescribed(SPR_XCR0 | 1 << 19 | 1 << 63),
            1 << 19 | 1 << 63
        );
        assert_eq!(l.standard_size(SPR_XCR0), 11008);
        assert_eq!(l.standard_size(0x2e7), 2696);
        assert_eq!(l.standard_size(LEGACY_COMPONENTS), EXTENDED);
        let offsets: Vec<(u32, usize)> = l
            .compacted(SPR_XCR0)
            .iter()
            .map(|&(i, _, at)| (i, at))
            .collect();
        // AVX 576+256, opmask +64, ZMM_Hi256 +512, Hi16_ZMM +1024, PKRU +8 = 2440; the tile
        // components are 64-byte aligned.
        assert_eq!(
            offsets,
            [
                (2, 576),
                (5, 832),
                (6, 896),
                (7, 1408),
                (9, 2432),
                (17, 2496),
                (18, 2560)
            ]
        );
        assert_eq!(l.compacted_size(SPR_XCR0), 10752);
        assert_eq!(l.compacted_size(1 << 18 | 3), EXTENDED + 8192);
    }

    #[test]
    fn implausible_cpuid_values_leave_components_undescribed() {
        let l = XsaveLayout::from_cpuid(|leaf, sub| match (leaf, sub) {
            (LEAF, 0) => [0b1_1111_1111, 0, 4096, 0],
            (LEAF, 2) => [256, 576, 0, 0],
            (LEAF, 3) => [64, 100, 0, 0],  // inside the legacy area
            (LEAF, 4) => [64, 4090, 0, 0], // past ECX of sub-leaf 0
            (LEAF, 5) => [0, 1024, 0, 0],  // no size
            (LEAF, 6) => [64, 1024, 1, 0], // a supervisor component
            (LEAF, 7) => [u32::MAX, u32::MAX, 0, 0],
            (LEAF, 8) => [64, 2048, 4, 0], // XFD bit without XFD support
            _ => [0; 4],
        });
        assert_eq!(l.undescribed(0b1_1111_1111), 0b1111_1000);
        assert_eq!(l.xfd_capable(), 0);
        assert_eq!(l.standard_size(u64::MAX), 2112);
        let huge = XsaveLayout::from_cpuid(|_, _| [u32::MAX, u32::MAX, u32::MAX, u32::MAX]);
        assert_eq!(huge.max_size(), MAX_AREA);
        assert_eq!(huge.undescribed(u64::MAX), !LEGACY_COMPONENTS);
    }

    #[test]
    fn a_cpuid_without_leaf_0dh_has_only_the_legacy_area() {
        let l = XsaveLayout::from_entries(&[]);
        assert_eq!(l.supported(), 1);
        assert_eq!(l.undescribed(0b111), 0b100);
        assert_eq!(l.standard_size(u64::MAX), EXTENDED);
        assert_eq!(l.compacted_size(u64::MAX), EXTENDED);
    }

    #[test]
    fn host_layout_matches_the_hosts_own_size() {
        let l = XsaveLayout::host();
        let l1 = std::arch::x86_64::__cpuid(1);
        if l1.ecx & (1 << 27) == 0 {
            return; // no OSXSAVE: XCR0 cannot be read
        }
        let (lo, hi): (u32, u32);
        // SAFETY: xgetbv(0) is allowed at CPL 3 once the OS enabled XSAVE (OSXSAVE, checked).
        unsafe { std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi) };
        let xcr0 = u64::from(hi) << 32 | u64::from(lo);
        assert_eq!(l.undescribed(xcr0), 0, "XCR0 {xcr0:#x}");
        let ebx = std::arch::x86_64::__cpuid_count(LEAF, 0).ebx as usize;
        assert!(
            l.standard_size(xcr0) <= ebx,
            "CPUID.(0DH,0).EBX {ebx} for XCR0 {xcr0:#x}"
        );
    }
}
