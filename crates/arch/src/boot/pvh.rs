//! Xen PVH boot (xenbits docs/misc/pvh.html): `hvm_start_info` with the memory map, the
//! command line, the RSDP and the initrd as module 0.

use vm_memory::{Bytes, GuestAddress};

use super::{BootError, Initrd};
use crate::layout::{BOOT_INFO_ADDR, BOOT_INFO_SIZE};
use crate::memory_map::MemoryMapEntry;
use crate::GuestMemory;

pub const START_INFO_MAGIC: u32 = 0x336e_c578;
const START_INFO_SIZE: u64 = 56;
const MODLIST_OFFSET: u64 = 0x40;
const MEMMAP_OFFSET: u64 = 0x80;

/// Write `hvm_start_info` and its tables; returns its address (EBX at entry).
pub fn write_start_info(
    mem: &GuestMemory,
    e820: &[MemoryMapEntry],
    cmdline_addr: u64,
    initrd: Option<&Initrd>,
    rsdp_addr: u64,
) -> Result<u64, BootError> {
    let base = BOOT_INFO_ADDR;
    let memmap = base + MEMMAP_OFFSET;
    if memmap + e820.len() as u64 * 24 > base + BOOT_INFO_SIZE {
        return Err(BootError::InvalidKernel(
            "memory map too long for PVH start_info".into(),
        ));
    }
    let mut info = Vec::with_capacity(START_INFO_SIZE as usize);
    info.extend_from_slice(&START_INFO_MAGIC.to_le_bytes());
    info.extend_from_slice(&1u32.to_le_bytes()); // version
    info.extend_from_slice(&0u32.to_le_bytes()); // flags
    info.extend_from_slice(&(initrd.is_some() as u32).to_le_bytes());
    let modlist = if initrd.is_some() {
        base + MODLIST_OFFSET
    } else {
        0
    };
    info.extend_from_slice(&modlist.to_le_bytes());
    info.extend_from_slice(&cmdline_addr.to_le_bytes());
    info.extend_from_slice(&rsdp_addr.to_le_bytes());
    info.extend_from_slice(&memmap.to_le_bytes());
    info.extend_from_slice(&(e820.len() as u32).to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    mem.write_slice(&info, GuestAddress(base))
        .map_err(BootError::Memory)?;

    if let Some(i) = initrd {
        let mut entry = Vec::with_capacity(32);
        for v in [i.addr, i.size, 0, 0] {
            entry.extend_from_slice(&v.to_le_bytes());
        }
        mem.write_slice(&entry, GuestAddress(modlist))
            .map_err(BootError::Memory)?;
    }
    for (n, e) in e820.iter().enumerate() {
        let mut entry = Vec::with_capacity(24);
        entry.extend_from_slice(&e.addr.to_le_bytes());
        entry.extend_from_slice(&e.size.to_le_bytes());
        entry.extend_from_slice(&e.kind.to_le_bytes());
        entry.extend_from_slice(&0u32.to_le_bytes());
        mem.write_slice(&entry, GuestAddress(memmap + n as u64 * 24))
            .map_err(BootError::Memory)?;
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_map::RamLayout;

    #[test]
    fn start_info_layout() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let layout = RamLayout::new(0x100_0000).unwrap();
        let i = Initrd {
            addr: 0x80_0000,
            size: 10,
        };
        let a = write_start_info(&mem, &layout.e820(), 0x20000, Some(&i), 0xe0000).unwrap();
        let r32 = |o: u64| mem.read_obj::<u32>(GuestAddress(a + o)).unwrap();
        let r64 = |o: u64| mem.read_obj::<u64>(GuestAddress(a + o)).unwrap();
        assert_eq!((r32(0), r32(4), r32(12)), (START_INFO_MAGIC, 1, 1));
        assert_eq!((r64(24), r64(32)), (0x20000, 0xe0000));
        assert_eq!(r32(48), 3);
        let mods = r64(16);
        assert_eq!(mem.read_obj::<u64>(GuestAddress(mods)).unwrap(), 0x80_0000);
        let mm = r64(40);
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(mm + 48)).unwrap(),
            0x100000
        );
    }
}
