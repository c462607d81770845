//! Bootable Debian cloud disk images built from Debian's own packages.
//!
//! [`build`] runs `mmdebstrap` against the Debian mirror of the host's apt sources (or a given
//! one) to install a cloud kernel, systemd, cloud-init and OpenSSH into a directory, configures
//! it as a cloud image (fstab by UUID, no machine-id or ssh host keys, cloud-init reading only
//! NoCloud seeds), then makes a sparse raw disk: a GPT with one ext4 root partition at 1 MiB,
//! filled by `mkfs.ext4 -d` without loop devices or mounts. The returned [`Manifest`] records
//! the suite, mirror, every package version, the kernel, the UUIDs and the image's SHA-256.
//!
//! The image has no boot loader: vessel boots its `/vmlinuz` and `/initrd.img` directly with
//! the manifest's `kernel_cmdline` (`root=UUID=… ro console=ttyS0`).

mod build;
mod configure;
mod disk;
mod error;
mod ids;
mod manifest;
mod mmdebstrap;
mod sources;
mod suite;
mod tools;
mod workdir;

pub use build::{build, preflight, BuildOptions, Step, DEFAULT_SIZE};
pub use configure::PLACEHOLDER_HOSTNAME;
pub use disk::{
    print_table, sha256 as sha256_file, Layout, LINUX_FS_TYPE, MIN_SIZE, PARTITION_OFFSET,
};
pub use error::{Error, Result};
pub use manifest::{Manifest, Package};
pub use mmdebstrap::{INITRAMFS_MODULES, PACKAGES};
pub use sources::{find_mirrors, host_mirrors, parse_deb822, parse_one_line, Mirrors, SourceEntry};
pub use suite::Suite;
pub use tools::{Tool, ALL as TOOLS};
