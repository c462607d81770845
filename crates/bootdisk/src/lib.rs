//! Find what a disk image would boot — kernel, initrd and command line — without firmware,
//! mounts or root: partition tables ([`partition`]), file system magic ([`probe`]), ext2/3/4
//! files through `ext4-view` and the default entry of grub.cfg ([`grub`]); the ELF kernel
//! inside a bzImage ([`vmlinux`]).

mod boot;
pub mod decompress;
pub mod ext4fs;
mod extract;
pub mod grub;
mod locate;
pub mod memdisk;
pub mod partition;
pub mod probe;
pub mod reader;
pub mod vmlinux;

pub use boot::{
    find_boot, find_boot_with, BootFiles, BootSource, Error, Limits, PartitionInfo, LIMITS,
};
pub use extract::{extract, write_boot_files, ExtractError, Extracted};
