//! Booting a disk image directly: extract the kernel, initrd and command line the image
//! itself would boot (crates/bootdisk), and make the command line right for vessel.

use std::path::Path;

use images::BootInfo;

/// The nested-host profile (docs/nested-kvm.md), for hosts whose /dev/kvm is kvm_pvm.
const NESTED_HOST_CMDLINE: &str = include_str!("../scripts/nested-host.cmdline");

/// Find what the image at `base` (in `format`) boots and write its kernel (and initrd)
/// into `dir`. The error is the reason, in words.
pub fn extract(base: &Path, format: block::Format, dir: &Path) -> Result<BootInfo, String> {
    let opts = block::OpenOptions {
        read_only: true,
        format: Some(format),
        allow_external_backing: false,
    };
    let mut disk = block::open(base, &opts).map_err(|e| e.to_string())?;
    let found = bootdisk::find_boot(&mut disk).map_err(|e| e.to_string())?;
    let write = |name: &str, data: &[u8]| {
        std::fs::write(dir.join(name), data).map_err(|e| format!("{}: {e}", dir.display()))
    };
    write("vmlinuz", &found.kernel)?;
    let initrd = match &found.initrd {
        Some(data) => {
            write("initrd.img", data)?;
            Some("initrd.img".to_string())
        }
        None => None,
    };
    Ok(BootInfo {
        kernel: "vmlinuz".into(),
        initrd,
        cmdline: found.cmdline.clone(),
        found_by: match &found.source {
            bootdisk::BootSource::GrubEntry { title, config } => format!("{config}: {title}"),
            bootdisk::BootSource::Symlinks => "/vmlinuz and /initrd.img".into(),
        },
    })
}

/// Whether /dev/kvm is kvm_pvm (software nested KVM, guest ring 0 emulated).
pub fn kvm_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// The command line to boot an image with: its own, then vessel's serial console (the last
/// `console=` becomes /dev/console), then the nested-host profile when `nested`, then what
/// the user appends.
pub fn vm_cmdline(image_cmdline: &str, nested: bool, append: &str) -> String {
    let mut words: Vec<&str> = image_cmdline.split_whitespace().collect();
    words.push("console=ttyS0");
    let profile = nested_profile();
    if nested {
        // The profile repeats vessel's console; keep each of its words once.
        for w in profile.split_whitespace() {
            if !words.contains(&w) {
                words.push(w);
            }
        }
    }
    words.extend(append.split_whitespace());
    words.join(" ")
}

/// The profile file without its comments, on one line.
fn nested_profile() -> String {
    NESTED_HOST_CMDLINE
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_puts_vessels_console_last_before_the_users_words() {
        assert_eq!(
            vm_cmdline("root=UUID=1 ro console=tty0 ", false, " quiet"),
            "root=UUID=1 ro console=tty0 console=ttyS0 quiet"
        );
        let nested = vm_cmdline("root=UUID=1", true, "");
        assert!(nested.starts_with("root=UUID=1 console=ttyS0 "));
        assert!(nested.contains("clearcpuid=") && !nested.contains('#'));
    }
}
