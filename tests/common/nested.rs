//! The stock Debian guest with the nested-host profile (docs/nested-kvm.md), shared by the
//! tests that boot it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The stock Debian guest of scripts/make-guest.sh, in $VESSEL_GUEST_DIR or guest/ (the
/// directory the TCG tests share; the script does nothing when it is built already): the ELF
/// vmlinux (the bzImage's decompressor is slow where ring 0 is emulated) and the small
/// uncompressed initramfs made for nested hosts.
pub fn debian_guest() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("VESSEL_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("guest"));
    let out = Command::new(root.join("scripts/make-guest.sh"))
        .env("OUT", &dir)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/make-guest.sh");
    assert!(
        out.status.success(),
        "scripts/make-guest.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kernel = dir.join("vmlinux");
    assert!(
        kernel.exists(),
        "make-guest.sh extracted no vmlinux into {dir:?}"
    );
    (kernel, dir.join("initramfs-nested.cpio"))
}

/// The nested-host command line, scripts/nested-host.cmdline without its comment lines.
pub fn nested_cmdline() -> String {
    include_str!("../../scripts/nested-host.cmdline")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
