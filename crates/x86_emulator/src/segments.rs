//! Segment descriptors: reading them from the GDT/LDT and turning them into KVM's segment
//! registers, as loading a selector does.

use kvm_bindings::{kvm_segment, kvm_sregs};

use crate::guest_virt::{GuestVirt, Privilege};
use crate::{Exception, Failure};

/// A raw 8-byte code/data segment descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor(pub u64);

impl Descriptor {
    pub fn present(self) -> bool {
        self.0 >> 47 & 1 != 0
    }
    pub fn dpl(self) -> u8 {
        (self.0 >> 45 & 3) as u8
    }
    /// S bit: code/data (true) or system descriptor.
    pub fn code_or_data(self) -> bool {
        self.0 >> 44 & 1 != 0
    }
    pub fn type_(self) -> u8 {
        (self.0 >> 40 & 0xf) as u8
    }
    pub fn is_code(self) -> bool {
        self.code_or_data() && self.type_() & 0x8 != 0
    }
    pub fn conforming(self) -> bool {
        self.is_code() && self.type_() & 0x4 != 0
    }
    pub fn writable_data(self) -> bool {
        self.code_or_data() && self.type_() & 0xa == 0x2
    }
    pub fn long(self) -> bool {
        self.0 >> 53 & 1 != 0
    }

    /// The segment register contents after loading `selector` with this descriptor (the
    /// accessed bit set, as the CPU sets it).
    pub fn to_segment(self, selector: u16) -> kvm_segment {
        let d = self.0;
        let base = (d >> 16 & 0xff_ffff) | (d >> 56 & 0xff) << 24;
        let mut limit = (d & 0xffff) | (d >> 48 & 0xf) << 16;
        let g = (d >> 55 & 1) as u8;
        if g != 0 {
            limit = limit << 12 | 0xfff;
        }
        kvm_segment {
            base,
            limit: limit as u32,
            selector,
            type_: self.type_() | 1,
            present: u8::from(self.present()),
            dpl: self.dpl(),
            db: (d >> 54 & 1) as u8,
            s: u8::from(self.code_or_data()),
            l: (d >> 53 & 1) as u8,
            g,
            avl: (d >> 52 & 1) as u8,
            unusable: 0,
            padding: 0,
        }
    }
}

/// A null selector loaded into a data segment register (or SS in 64-bit mode): unusable,
/// with the RPL as DPL, which is where KVM keeps SS's privilege level.
pub fn null_segment(selector: u16) -> kvm_segment {
    kvm_segment {
        selector,
        dpl: (selector & 3) as u8,
        unusable: 1,
        ..Default::default()
    }
}

/// The descriptor `selector` names in the GDT or LDT; #GP(selector) past the table's limit.
pub fn read_descriptor(
    virt: &GuestVirt,
    sregs: &kvm_sregs,
    selector: u16,
) -> Result<Descriptor, Failure> {
    let index = u64::from(selector & !7);
    let (base, limit) = if selector & 4 != 0 {
        if sregs.ldt.unusable != 0 || sregs.ldt.present == 0 {
            return Err(Exception::GeneralProtection(selector & !3).into());
        }
        (sregs.ldt.base, u64::from(sregs.ldt.limit))
    } else {
        (sregs.gdt.base, u64::from(sregs.gdt.limit))
    };
    if index + 7 > limit {
        return Err(Exception::GeneralProtection(selector & !3).into());
    }
    let raw = virt.read_u64(base.wrapping_add(index), Privilege::Supervisor)?;
    Ok(Descriptor(raw))
}

/// Privilege level the vCPU runs at (SS.DPL, as KVM keeps it).
pub fn cpl(sregs: &kvm_sregs) -> u8 {
    sregs.ss.dpl & 3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's 64-bit GDT entries.
    const KERNEL_CS: u64 = 0x00af_9b00_0000_ffff;
    const USER_DS: u64 = 0x00cf_f300_0000_ffff;

    #[test]
    fn linux_descriptors_decode_to_flat_segments() {
        let cs = Descriptor(KERNEL_CS).to_segment(0x10);
        assert_eq!(
            (cs.base, cs.limit, cs.type_, cs.s, cs.dpl, cs.l, cs.db, cs.g),
            (0, 0xffff_ffff, 0xb, 1, 0, 1, 0, 1)
        );
        let ds = Descriptor(USER_DS).to_segment(0x2b);
        assert_eq!(
            (ds.type_, ds.dpl, ds.db, ds.l, ds.present),
            (0x3, 3, 1, 0, 1)
        );
        assert!(Descriptor(KERNEL_CS).is_code() && !Descriptor(KERNEL_CS).conforming());
        assert!(Descriptor(USER_DS).writable_data());
    }

    #[test]
    fn base_and_byte_granular_limit_are_reassembled() {
        // base 0x12345678, limit 0x5ffff, G=0, present data segment.
        let d = Descriptor(0x1205_9334_5678_ffff);
        let s = d.to_segment(0x8);
        assert_eq!((s.base, s.limit, s.g), (0x1234_5678, 0x5ffff, 0));
        assert_eq!(null_segment(0x3).dpl, 3);
    }
}
