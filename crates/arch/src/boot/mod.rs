//! Loading a guest kernel and writing what its boot protocol hands over: Linux 64-bit boot
//! protocol (bzImage or ELF vmlinux), Xen PVH (ELF with the PVH note) and multiboot v1.

mod elf32;
pub mod linux;
pub mod multiboot;
pub mod pvh;

use std::io::Cursor;

use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress};

use crate::cpu_state::EntryMode;
use crate::layout::{CMDLINE_ADDR, CMDLINE_MAX_SIZE, HIMEM_START};
use crate::memory_map::RamLayout;
use crate::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("unrecognised kernel image: not a bzImage, an ELF64 vmlinux or a multiboot kernel")]
    UnknownFormat,
    #[error("invalid kernel image: {0}")]
    InvalidKernel(String),
    #[error("cannot load the kernel: {0}")]
    Loader(#[from] linux_loader::loader::Error),
    #[error("the bzImage has no 64-bit entry point (xloadflags lacks XLF_KERNEL_64)")]
    No64BitEntry,
    #[error("the command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("the command line contains a NUL byte")]
    CmdlineNul,
    #[error(
        "the initrd ({size} bytes) does not fit in guest memory between {low:#x} and {high:#x}"
    )]
    InitrdTooLarge { size: u64, low: u64, high: u64 },
    #[error("guest memory access failed: {0}")]
    Memory(#[source] vm_memory::GuestMemoryError),
}

/// Kernel image formats vessel boots, detected by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    BzImage,
    /// ELF64 vmlinux without a PVH note: Linux 64-bit boot protocol.
    Elf64,
    /// ELF with the Xen PVH entry note.
    Pvh,
    Multiboot,
}

/// Where the initrd (or multiboot module 0) was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Initrd {
    pub addr: u64,
    pub size: u64,
}

/// What to boot.
pub struct BootConfig<'a> {
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    /// Name given to multiboot module 0 (its "command line").
    pub initrd_name: &'a str,
    /// The kernel's name (its path): a multiboot boot loader puts it before the arguments,
    /// as argv[0] (see [`multiboot::command_line`]).
    pub kernel_name: &'a str,
    pub cmdline: &'a str,
    pub rsdp_addr: u64,
    /// End of the ACPI tables at `rsdp_addr`: a multiboot kernel may load into the BIOS
    /// area, but not over them.
    pub acpi_end: u64,
}

/// The result: how to enter the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootSetup {
    pub format: KernelFormat,
    pub entry: EntryMode,
}

/// Detect the kernel format from its first bytes.
pub fn detect_format(image: &[u8]) -> Result<KernelFormat, BootError> {
    let is_elf = image.len() >= 5 && image[..4] == *b"\x7fELF";
    if is_elf && image[4] == 2 {
        return Ok(KernelFormat::Elf64); // PVH is decided once the notes are read.
    }
    if let Some(h) = multiboot::find_header(image) {
        if is_elf || h.flags & (1 << 16) != 0 {
            return Ok(KernelFormat::Multiboot);
        }
    }
    if image.get(0x202..0x206) == Some(b"HdrS") {
        return Ok(KernelFormat::BzImage);
    }
    Err(BootError::UnknownFormat)
}

fn write_cmdline(mem: &GuestMemory, cmdline: &str, max: usize) -> Result<(), BootError> {
    let max = max.min(CMDLINE_MAX_SIZE);
    if cmdline.len() > max {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    if cmdline.contains('\0') {
        return Err(BootError::CmdlineNul);
    }
    mem.write_slice(cmdline.as_bytes(), GuestAddress(CMDLINE_ADDR))
        .map_err(BootError::Memory)?;
    mem.write_obj(0u8, GuestAddress(CMDLINE_ADDR + cmdline.len() as u64))
        .map_err(BootError::Memory)
}

/// Place `data` at the highest page-aligned address that ends at or below `high`, not below
/// `low`.
fn place_high(mem: &GuestMemory, data: &[u8], low: u64, high: u64) -> Result<Initrd, BootError> {
    let size = data.len() as u64;
    let too_large = BootError::InitrdTooLarge { size, low, high };
    let addr = high.checked_sub(size).ok_or(too_large)? & !0xfff;
    if addr < low {
        return Err(BootError::InitrdTooLarge { size, low, high });
    }
    mem.write_slice(data, GuestAddress(addr))
        .map_err(BootError::Memory)?;
    Ok(Initrd { addr, size })
}

/// Load the kernel (and initrd) into guest memory and write the boot protocol's structures.
pub fn load(
    mem: &GuestMemory,
    layout: &RamLayout,
    cfg: &BootConfig,
) -> Result<BootSetup, BootError> {
    let e820 = layout.e820();
    let low_end = layout.low_end();
    match detect_format(cfg.kernel)? {
        KernelFormat::Multiboot => {
            let header = multiboot::find_header(cfg.kernel).ok_or(BootError::UnknownFormat)?;
            let cmdline = multiboot::command_line(cfg.kernel_name, cfg.cmdline);
            let reserved = multiboot::reserved_areas(cmdline.len(), cfg.rsdp_addr, cfg.acpi_end);
            let loaded = multiboot::load(mem, cfg.kernel, &header, low_end, &reserved)?;
            write_cmdline(mem, &cmdline, CMDLINE_MAX_SIZE)?;
            let module = match cfg.initrd {
                Some(data) => {
                    let addr = multiboot::module_address(loaded.end.max(HIMEM_START));
                    let end = addr
                        .checked_add(data.len() as u64)
                        .filter(|e| *e <= low_end);
                    if end.is_none() {
                        return Err(BootError::InitrdTooLarge {
                            size: data.len() as u64,
                            low: addr,
                            high: low_end,
                        });
                    }
                    mem.write_slice(data, GuestAddress(addr))
                        .map_err(BootError::Memory)?;
                    Some(Initrd {
                        addr,
                        size: data.len() as u64,
                    })
                }
                None => None,
            };
            let info = multiboot::write_info(
                mem,
                &e820,
                low_end,
                CMDLINE_ADDR,
                module.as_ref().map(|m| (m, cfg.initrd_name)),
            )?;
            Ok(BootSetup {
                format: KernelFormat::Multiboot,
                entry: EntryMode::Multiboot {
                    entry: loaded.entry,
                    info,
                },
            })
        }
        KernelFormat::BzImage => {
            let result = BzImage::load(
                mem,
                None,
                &mut Cursor::new(cfg.kernel),
                Some(GuestAddress(HIMEM_START)),
            )?;
            let hdr = linux::effective_header(result.setup_header);
            if hdr.version >= 0x20c && hdr.xloadflags & linux::XLF_KERNEL_64 == 0 {
                return Err(BootError::No64BitEntry);
            }
            let entry = result.kernel_load.0 + 0x200;
            linux_common(
                mem,
                cfg,
                hdr,
                true,
                result.kernel_end,
                &e820,
                low_end,
                entry,
                KernelFormat::BzImage,
            )
        }
        KernelFormat::Elf64 | KernelFormat::Pvh => {
            let result = Elf::load(
                mem,
                None,
                &mut Cursor::new(cfg.kernel),
                Some(GuestAddress(HIMEM_START)),
            )?;
            if let PvhBootCapability::PvhEntryPresent(pvh_entry) = result.pvh_boot_cap {
                write_cmdline(mem, cfg.cmdline, CMDLINE_MAX_SIZE)?;
                let initrd = match cfg.initrd {
                    Some(d) => Some(place_high(mem, d, result.kernel_end, low_end)?),
                    None => None,
                };
                let start_info = pvh::write_start_info(
                    mem,
                    &e820,
                    CMDLINE_ADDR,
                    initrd.as_ref(),
                    cfg.rsdp_addr,
                )?;
                return Ok(BootSetup {
                    format: KernelFormat::Pvh,
                    entry: EntryMode::Pvh {
                        entry: pvh_entry.0,
                        start_info,
                    },
                });
            }
            let hdr = linux::effective_header(None);
            let entry = result.kernel_load.0;
            linux_common(
                mem,
                cfg,
                hdr,
                false,
                result.kernel_end,
                &e820,
                low_end,
                entry,
                KernelFormat::Elf64,
            )
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn linux_common(
    mem: &GuestMemory,
    cfg: &BootConfig,
    hdr: linux_loader::loader::bootparam::setup_header,
    is_bzimage: bool,
    kernel_end: u64,
    e820: &[crate::memory_map::MemoryMapEntry],
    low_end: u64,
    entry: u64,
    format: KernelFormat,
) -> Result<BootSetup, BootError> {
    write_cmdline(mem, cfg.cmdline, linux::cmdline_limit(&hdr, is_bzimage))?;
    let initrd = match cfg.initrd {
        Some(d) => Some(place_high(
            mem,
            d,
            kernel_end,
            low_end.min(linux::initrd_limit(&hdr)),
        )?),
        None => None,
    };
    let zero_page = linux::write_zero_page(
        mem,
        hdr,
        e820,
        CMDLINE_ADDR,
        cfg.cmdline.len(),
        initrd.as_ref(),
        cfg.rsdp_addr,
    )?;
    Ok(BootSetup {
        format,
        entry: EntryMode::Linux64 { entry, zero_page },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats_by_content() {
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect_format(&bz).unwrap(), KernelFormat::BzImage);
        let mut elf64 = vec![0u8; 64];
        elf64[..5].copy_from_slice(b"\x7fELF\x02");
        assert_eq!(detect_format(&elf64).unwrap(), KernelFormat::Elf64);
        // ELF32 without a multiboot header is not bootable.
        let mut elf32 = vec![0u8; 64];
        elf32[..5].copy_from_slice(b"\x7fELF\x01");
        assert!(matches!(
            detect_format(&elf32),
            Err(BootError::UnknownFormat)
        ));
        assert!(matches!(
            detect_format(b"hello"),
            Err(BootError::UnknownFormat)
        ));
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let i = place_high(&mem, &[1u8; 5000], 0x20_0000, 0x100_0000).unwrap();
        assert_eq!(
            i,
            Initrd {
                addr: 0xffe000,
                size: 5000
            }
        );
        assert!(matches!(
            place_high(&mem, &vec![0u8; 0x100_0000], 0x20_0000, 0x100_0000),
            Err(BootError::InitrdTooLarge { .. })
        ));
    }

    #[test]
    fn cmdline_limits_are_enforced() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        assert!(matches!(
            write_cmdline(&mem, "abcdef", 5),
            Err(BootError::CmdlineTooLong { len: 6, max: 5 })
        ));
        assert!(matches!(
            write_cmdline(&mem, "a\0b", 50),
            Err(BootError::CmdlineNul)
        ));
        write_cmdline(&mem, "console=ttyS0", 50).unwrap();
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(CMDLINE_ADDR + 13)).unwrap(),
            0
        );
    }
}
