//! System control port B (0x61) when the VM has no PIT (KVM's in-kernel PIT otherwise
//! serves it): reads 0 — speaker gate off, and no NMI source (SERR/IOCHK) reported, which
//! an all-ones read would claim — and writes are ignored.

use crate::bus::BusDevice;

pub const PORT61: u16 = 0x61;

#[derive(Default)]
pub struct Port61;

impl BusDevice for Port61 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_report_no_nmi_source() {
        let mut p = Port61;
        let mut b = [0xffu8];
        p.write(0, &[0x3]);
        p.read(0, &mut b);
        assert_eq!(b, [0]);
    }
}
