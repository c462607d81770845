//! Guest-virtual memory: a walk of the guest's page tables from CR3 (32-bit, PAE, 4- and
//! 5-level, with large pages) and reads/writes of guest-virtual ranges through it.

use std::sync::atomic::{AtomicU64, Ordering};

use kvm_bindings::kvm_sregs;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::GuestMemory;

const CR0_PG: u64 = 1 << 31;
const CR0_WP: u64 = 1 << 16;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;

const PTE_P: u64 = 1 << 0;
const PTE_W: u64 = 1 << 1;
const PTE_U: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// #PF error-code bits.
pub const PF_PRESENT: u32 = 1 << 0;
pub const PF_WRITE: u32 = 1 << 1;
pub const PF_USER: u32 = 1 << 2;
pub const PF_FETCH: u32 = 1 << 4;

/// A page fault the access would take: its linear address (CR2) and error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("page fault at {linear:#x} (error code {error_code:#x})")]
pub struct PageFault {
    pub linear: u64,
    pub error_code: u32,
}

/// Why a guest-virtual access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Fault(#[from] PageFault),
    /// The page tables lead outside guest RAM (a page-table page or the target is MMIO or
    /// unbacked): nothing vessel can emulate against.
    #[error("guest-physical {0:#x} is not RAM")]
    NotRam(u64),
}

/// What an access does to the page it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Fetch,
}

/// Whose access it is: user (CPL 3 data access) or supervisor (CPL 0-2, and the CPU's
/// implicit accesses to descriptor tables and the TSS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    User,
    Supervisor,
}

/// Paging mode, from the control registers.
#[derive(Debug, Clone, Copy)]
struct Paging {
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
}

/// Guest-virtual (linear) view of guest memory for one vCPU's paging state.
pub struct GuestVirt<'a> {
    mem: &'a GuestMemory,
    paging: Paging,
}

impl<'a> GuestVirt<'a> {
    pub fn new(mem: &'a GuestMemory, sregs: &kvm_sregs) -> Self {
        GuestVirt {
            mem,
            paging: Paging {
                cr0: sregs.cr0,
                cr3: sregs.cr3,
                cr4: sregs.cr4,
                efer: sregs.efer,
            },
        }
    }

    /// Guest-physical address of `linear`, setting accessed (and for writes dirty) bits as
    /// the CPU would.
    pub fn translate(
        &self,
        linear: u64,
        access: Access,
        who: Privilege,
    ) -> Result<u64, AccessError> {
        let p = self.paging;
        if p.cr0 & CR0_PG == 0 {
            return Ok(linear & 0xffff_ffff);
        }
        let fault = |present: bool| {
            let mut error_code = if present { PF_PRESENT } else { 0 };
            if access == Access::Write {
                error_code |= PF_WRITE;
            }
            if who == Privilege::User {
                error_code |= PF_USER;
            }
            if access == Access::Fetch {
                error_code |= PF_FETCH;
            }
            AccessError::Fault(PageFault { linear, error_code })
        };
        // (table address, index shift, entry size) per level, from the top.
        let (levels, mut table, entry_size): (&[u32], u64, u64) = if p.efer & EFER_LMA != 0 {
            let shifts: &[u32] = if p.cr4 & CR4_LA57 != 0 {
                &[48, 39, 30, 21, 12]
            } else {
                &[39, 30, 21, 12]
            };
            (shifts, p.cr3 & ADDR_MASK, 8)
        } else if p.cr4 & CR4_PAE != 0 {
            // The PDPTE: no A/D bits, no permission bits.
            let pdpte_addr = (p.cr3 & 0xffff_ffe0) + ((linear >> 30) & 3) * 8;
            let pdpte = self.read_entry(pdpte_addr, 8)?;
            if pdpte & PTE_P == 0 {
                return Err(fault(false));
            }
            (&[21, 12], pdpte & ADDR_MASK, 8)
        } else {
            (&[22, 12], p.cr3 & 0xffff_f000, 4)
        };
        let mut writable = true;
        let mut user = true;
        for (depth, &shift) in levels.iter().enumerate() {
            let index_mask = if entry_size == 8 { 0x1ff } else { 0x3ff };
            let entry_addr = table + ((linear >> shift) & index_mask) * entry_size;
            let entry = self.read_entry(entry_addr, entry_size)?;
            if entry & PTE_P == 0 {
                return Err(fault(false));
            }
            writable &= entry & PTE_W != 0;
            user &= entry & PTE_U != 0;
            let last = depth + 1 == levels.len();
            let large = !last
                && entry & PTE_PS != 0
                && (entry_size == 8 && shift <= 30 || entry_size == 4 && p.cr4 & CR4_PSE != 0);
            if last || large {
                if who == Privilege::User && !user {
                    return Err(fault(true));
                }
                if access == Access::Write
                    && !writable
                    && (who == Privilege::User || p.cr0 & CR0_WP != 0)
                {
                    return Err(fault(true));
                }
                let mut bits = PTE_A;
                if access == Access::Write {
                    bits |= PTE_D;
                }
                self.set_entry_bits(entry_addr, entry_size, entry, bits);
                let page_mask = (1u64 << shift) - 1;
                let frame = if entry_size == 4 && large {
                    // 4 MiB page: bits 13..20 hold physical address bits 32..39.
                    (entry & 0xffc0_0000) | ((entry >> 13) & 0xff) << 32
                } else {
                    entry & ADDR_MASK & !page_mask
                };
                return Ok(frame | (linear & page_mask));
            }
            self.set_entry_bits(entry_addr, entry_size, entry, PTE_A);
            table = if entry_size == 8 {
                entry & ADDR_MASK
            } else {
                entry & 0xffff_f000
            };
        }
        unreachable!("the last level always returns")
    }

    fn read_entry(&self, addr: u64, size: u64) -> Result<u64, AccessError> {
        if size == 8 {
            self.mem
                .read_obj::<u64>(GuestAddress(addr))
                .map_err(|_| AccessError::NotRam(addr))
        } else {
            self.mem
                .read_obj::<u32>(GuestAddress(addr))
                .map(u64::from)
                .map_err(|_| AccessError::NotRam(addr))
        }
    }

    /// Set A/D bits in a paging entry with an atomic OR, if they are not set yet.
    fn set_entry_bits(&self, addr: u64, size: u64, entry: u64, bits: u64) {
        if entry & bits == bits {
            return;
        }
        if size == 8 {
            if let Some(atomic) = self.atomic_u64(addr) {
                atomic.fetch_or(bits, Ordering::SeqCst);
            }
        } else if let Ok(host) = self.mem.get_host_address(GuestAddress(addr & !3)) {
            // SAFETY: `host` points at 4 aligned bytes of guest RAM, mapped for the life of
            // the VM; guest memory is shared with the vCPUs, so atomics are the only sound
            // access, and AtomicU32 has u32's layout.
            let atomic = unsafe { &*host.cast::<std::sync::atomic::AtomicU32>() };
            atomic.fetch_or(bits as u32, Ordering::SeqCst);
        }
    }

    /// An atomic view of 8 aligned bytes of guest RAM at guest-physical `phys`.
    pub fn atomic_u64(&self, phys: u64) -> Option<&'a AtomicU64> {
        if !phys.is_multiple_of(8) {
            return None;
        }
        // The 8 bytes must lie in one region (they do when aligned: regions are page-sized).
        self.mem.get_slice(GuestAddress(phys), 8).ok()?;
        let host = self.mem.get_host_address(GuestAddress(phys)).ok()?;
        // SAFETY: `host` is 8-aligned (guest regions are page aligned in the host mapping),
        // backed by 8 bytes of the mapping, which lives as long as the GuestMemory borrowed
        // for 'a; AtomicU64 has u64's layout.
        Some(unsafe { &*host.cast::<AtomicU64>() })
    }

    /// Host pointer to `len` bytes at `linear` that lie in one page, for atomic accesses.
    pub fn host_range(
        &self,
        linear: u64,
        len: u64,
        access: Access,
        who: Privilege,
    ) -> Result<*mut u8, AccessError> {
        let phys = self.translate(linear, access, who)?;
        if (phys & 0xfff) + len > 0x1000 {
            return Err(AccessError::NotRam(phys));
        }
        self.mem
            .get_slice(GuestAddress(phys), len as usize)
            .map_err(|_| AccessError::NotRam(phys))?;
        self.mem
            .get_host_address(GuestAddress(phys))
            .map_err(|_| AccessError::NotRam(phys))
    }

    /// Read `buf.len()` bytes at `linear`, page by page. Faults are checked for every page
    /// before anything is read.
    pub fn read(&self, linear: u64, buf: &mut [u8], who: Privilege) -> Result<(), AccessError> {
        let pieces = self.pieces(linear, buf.len(), Access::Read, who)?;
        let mut done = 0;
        for (phys, len) in pieces {
            self.mem
                .read_slice(&mut buf[done..done + len], GuestAddress(phys))
                .map_err(|_| AccessError::NotRam(phys))?;
            done += len;
        }
        Ok(())
    }

    /// Write `buf` at `linear`, page by page, after checking every page is writable.
    pub fn write(&self, linear: u64, buf: &[u8], who: Privilege) -> Result<(), AccessError> {
        let pieces = self.pieces(linear, buf.len(), Access::Write, who)?;
        let mut done = 0;
        for (phys, len) in pieces {
            self.mem
                .write_slice(&buf[done..done + len], GuestAddress(phys))
                .map_err(|_| AccessError::NotRam(phys))?;
            // KVM's dirty log does not see this write: a live migration's log does.
            dirty_log::mark(phys, len as u64);
            done += len;
        }
        Ok(())
    }

    pub fn read_u64(&self, linear: u64, who: Privilege) -> Result<u64, AccessError> {
        let mut b = [0u8; 8];
        self.read(linear, &mut b, who)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Read `size` (2, 4 or 8) bytes, zero-extended.
    pub fn read_sized(&self, linear: u64, size: usize, who: Privilege) -> Result<u64, AccessError> {
        let mut b = [0u8; 8];
        self.read(linear, &mut b[..size.min(8)], who)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Guest-physical pieces (address, length) of a linear range, each within one page.
    fn pieces(
        &self,
        linear: u64,
        len: usize,
        access: Access,
        who: Privilege,
    ) -> Result<Vec<(u64, usize)>, AccessError> {
        let mut out = Vec::new();
        let mut at = 0usize;
        while at < len {
            let addr = linear.wrapping_add(at as u64);
            let in_page = (0x1000 - (addr & 0xfff)) as usize;
            let n = in_page.min(len - at);
            out.push((self.translate(addr, access, who)?, n));
            at += n;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{long_mode_sregs, PageTables};

    #[test]
    fn four_level_walk_maps_4k_2m_and_1g_pages() {
        let mut pt = PageTables::new();
        pt.map_4k(0xffff_8000_0000_1000, 0x20_3000, true, false);
        pt.map_2m(0xffff_8000_0040_0000, 0x60_0000, true);
        pt.map_1g(0x0000_0040_0000_0000, 0x4000_0000);
        let mem = pt.mem();
        let v = GuestVirt::new(&mem, &long_mode_sregs(pt.cr3()));
        let t = |a| v.translate(a, Access::Read, Privilege::Supervisor);
        assert_eq!(t(0xffff_8000_0000_1234), Ok(0x20_3234));
        assert_eq!(t(0xffff_8000_0045_6789), Ok(0x65_6789));
        assert_eq!(t(0x0000_0040_1234_5678), Ok(0x5234_5678));
        assert_eq!(
            t(0xffff_8000_0000_2000),
            Err(AccessError::Fault(PageFault {
                linear: 0xffff_8000_0000_2000,
                error_code: 0
            }))
        );
    }

    #[test]
    fn permissions_raise_page_faults_and_walks_set_accessed_and_dirty() {
        let mut pt = PageTables::new();
        let pte = pt.map_4k(0x40_0000, 0x20_3000, false, false);
        let mem = pt.mem();
        let v = GuestVirt::new(&mem, &long_mode_sregs(pt.cr3()));
        assert_eq!(
            v.translate(0x40_0010, Access::Write, Privilege::Supervisor),
            Err(AccessError::Fault(PageFault {
                linear: 0x40_0010,
                error_code: PF_PRESENT | PF_WRITE
            }))
        );
        assert_eq!(
            v.translate(0x40_0010, Access::Read, Privilege::User),
            Err(AccessError::Fault(PageFault {
                linear: 0x40_0010,
                error_code: PF_PRESENT | PF_USER
            }))
        );
        assert_eq!(
            v.translate(0x40_0010, Access::Read, Privilege::Supervisor),
            Ok(0x20_3010)
        );
        let entry: u64 = mem.read_obj(GuestAddress(pte)).unwrap();
        assert_eq!(entry & (PTE_A | PTE_D), PTE_A);
    }

    #[test]
    fn reads_and_writes_cross_pages_and_check_every_page_first() {
        let mut pt = PageTables::new();
        pt.map_4k(0x40_0000, 0x20_5000, true, false);
        pt.map_4k(0x40_1000, 0x20_3000, true, false);
        let mem = pt.mem();
        let v = GuestVirt::new(&mem, &long_mode_sregs(pt.cr3()));
        v.write(0x40_0ffc, &[1, 2, 3, 4, 5, 6, 7, 8], Privilege::Supervisor)
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x20_5ffc)).unwrap(),
            0x0403_0201
        );
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x20_3000)).unwrap(),
            0x0807_0605
        );
        assert_eq!(
            v.read_u64(0x40_0ffc, Privilege::Supervisor).unwrap(),
            0x0807_0605_0403_0201
        );
        // The second page is missing: nothing is written to the first.
        assert!(matches!(
            v.write(0x40_1ffc, &[9; 8], Privilege::Supervisor),
            Err(AccessError::Fault(PageFault {
                linear: 0x40_2000,
                ..
            }))
        ));
        assert_eq!(mem.read_obj::<u32>(GuestAddress(0x20_3ffc)).unwrap(), 0);
    }

    #[test]
    fn paging_off_is_identity_and_page_tables_outside_ram_fail_cleanly() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let mut sregs = kvm_sregs::default();
        let v = GuestVirt::new(&mem, &sregs);
        assert_eq!(
            v.translate(0x1234, Access::Read, Privilege::Supervisor),
            Ok(0x1234)
        );
        sregs = long_mode_sregs(0x4000_0000);
        let v = GuestVirt::new(&mem, &sregs);
        assert_eq!(
            v.translate(0x1234, Access::Read, Privilege::Supervisor),
            Err(AccessError::NotRam(0x4000_0000))
        );
    }
}
