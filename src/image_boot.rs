//! Booting a disk image directly: extract the kernel, initrd and command line the image
//! itself would boot (crates/bootdisk), and make the command line right for vessel. On a
//! host whose /dev/kvm is kvm_pvm, boot what runs there: the ELF kernel inside the image's
//! bzImage, its initrd decompressed, the nested-host profile and systemd's timeouts raised
//! (docs/images.md).

use std::path::{Path, PathBuf};

use images::BootInfo;

/// The nested-host profile (docs/nested-kvm.md), for hosts whose /dev/kvm is kvm_pvm.
const NESTED_HOST_CMDLINE: &str = include_str!("../scripts/nested-host.cmdline");
/// What an image's own initramfs and systemd need there besides (docs/images.md).
const NESTED_IMAGE_CMDLINE: &str = include_str!("../scripts/nested-host-image.cmdline");

/// What vessel says on stderr when it boots an image on a kvm_pvm host.
pub const NESTED_NOTICE: &str = "vessel: /dev/kvm is kvm_pvm (software nested KVM): booting the ELF kernel inside the image's bzImage and its initrd decompressed, with the nested-host boot profile of docs/nested-kvm.md and systemd's timeouts raised (scripts/nested-host-image.cmdline, docs/images.md); the guest will be slow";

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
/// `console=` becomes /dev/console), then when `nested` the nested-host profile and the
/// words for the image's userspace, then what the user appends.
pub fn vm_cmdline(image_cmdline: &str, nested: bool, append: &str) -> String {
    let mut words: Vec<&str> = image_cmdline.split_whitespace().collect();
    words.push("console=ttyS0");
    if nested {
        // The profile repeats vessel's console; keep each of its words once.
        for w in comment_free(NESTED_HOST_CMDLINE).chain(comment_free(NESTED_IMAGE_CMDLINE)) {
            if !words.contains(&w) {
                words.push(w);
            }
        }
    }
    words.extend(append.split_whitespace());
    words.join(" ")
}

/// The words of a command-line file, without its comment lines.
fn comment_free(file: &str) -> impl Iterator<Item = &str> {
    file.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
}

/// The kernel to boot for an image's `kernel`: on a kvm_pvm host (`nested`) the ELF kernel
/// inside its bzImage, whose decompressor would run emulated there for minutes (made once,
/// as `vmlinux` next to it); elsewhere, or if there is none, `kernel` itself (saying why).
pub fn kernel_for_host(kernel: &Path, nested: bool) -> PathBuf {
    if !nested {
        return kernel.to_path_buf();
    }
    match elf_kernel(kernel) {
        Ok(elf) => elf,
        Err(reason) => {
            eprintln!("vessel: booting {} as it is, not the ELF kernel inside it ({reason}): its decompressor runs emulated here, minutes more", kernel.display());
            kernel.to_path_buf()
        }
    }
}

/// The initrd to boot for an image's `initrd`: on a kvm_pvm host (`nested`) the archive
/// decompressed (made once, as `initrd.cpio` next to it): the kernel's own inflating runs
/// emulated there (a 6 MiB gzip'd initramfs: 340 s of guest time against 100 s
/// uncompressed, docs/nested-kvm.md). Elsewhere, or an initrd that does not start with a
/// format vessel decompresses, the initrd itself (saying why, unless it is a plain cpio).
pub fn initrd_for_host(initrd: &Path, nested: bool) -> PathBuf {
    if !nested {
        return initrd.to_path_buf();
    }
    match plain_initrd(initrd) {
        Ok(plain) => plain,
        Err(reason) => {
            eprintln!(
                "vessel: booting the initrd {} as it is ({reason}): the guest decompresses it, emulated here",
                initrd.display()
            );
            initrd.to_path_buf()
        }
    }
}

/// The largest decompressed initrd accepted.
const MAX_PLAIN_INITRD: usize = 1 << 30;

/// `initrd.cpio` next to `initrd`, decompressed from it unless already there; a cpio
/// archive is its own.
fn plain_initrd(initrd: &Path) -> Result<PathBuf, String> {
    let out = initrd.with_file_name("initrd.cpio");
    if out.is_file() {
        return Ok(out);
    }
    let data = std::fs::read(initrd).map_err(|e| format!("{}: {e}", initrd.display()))?;
    if data.starts_with(b"0707") {
        return Ok(initrd.to_path_buf());
    }
    let (cpio, _) =
        bootdisk::decompress::decompress(&data, MAX_PLAIN_INITRD).map_err(|e| e.to_string())?;
    if !cpio.starts_with(b"0707") {
        return Err("it does not decompress to a cpio archive".into());
    }
    write_aside(&out, &cpio)?;
    Ok(out)
}

/// Write `data` to `out` through a file beside it, renamed: a VM never boots half a file.
fn write_aside(out: &Path, data: &[u8]) -> Result<(), String> {
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let tmp = out.with_file_name(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, out))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: {e}", out.display())
        })
}

/// `vmlinux` next to the bzImage `kernel`, decompressed from it unless already there; an
/// ELF `kernel` is its own.
fn elf_kernel(kernel: &Path) -> Result<PathBuf, String> {
    let out = kernel.with_file_name("vmlinux");
    if out.is_file() {
        return Ok(out);
    }
    let bz = std::fs::read(kernel).map_err(|e| format!("{}: {e}", kernel.display()))?;
    if bz.starts_with(b"\x7fELF") {
        return Ok(kernel.to_path_buf());
    }
    let (elf, _) = bootdisk::vmlinux::extract_vmlinux(&bz).map_err(|e| e.to_string())?;
    write_aside(&out, &elf)?;
    Ok(out)
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
        // The image words come after the profile; none of it on hardware KVM.
        let timeout = "systemd.default_timeout_start_sec=";
        assert!(nested.find(timeout) > nested.find("initcall_blacklist="));
        assert!(nested.contains("systemd.service_watchdogs=0"));
        let plain = vm_cmdline("root=UUID=1", false, "quiet");
        assert!(!plain.contains(timeout) && !plain.contains("systemd.mask"));
        // The user's words come last, so they override.
        let mine = vm_cmdline("root=UUID=1", true, "systemd.default_timeout_start_sec=5");
        assert!(mine.ends_with(" systemd.default_timeout_start_sec=5"));
    }

    /// A bzImage as the kernel's build makes it: `gzip -9` of the ELF and its size appended,
    /// where the boot header's payload fields say (crates/bootdisk/src/vmlinux_tests.rs has
    /// every compression).
    fn bzimage(elf: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gzip = std::process::Command::new("gzip")
            .args(["-9", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        gzip.stdin.take().unwrap().write_all(elf).unwrap();
        let mut payload = gzip.wait_with_output().unwrap().stdout;
        payload.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        let mut bz = vec![0u8; 5 * 512];
        bz[0x1f1] = 4;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        bz[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        bz.extend_from_slice(&payload);
        bz
    }

    #[test]
    fn nested_hosts_boot_the_elf_inside_the_bzimage_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz");
        let elf = [b"\x7fELF\x02\x01".as_slice(), &[0x5a; 8192]].concat();
        std::fs::write(&kernel, bzimage(&elf)).unwrap();
        // Hardware KVM: the bzImage as it is, nothing written.
        assert_eq!(kernel_for_host(&kernel, false), kernel);
        assert!(!dir.path().join("vmlinux").exists());
        let booted = kernel_for_host(&kernel, true);
        assert_eq!(booted, dir.path().join("vmlinux"));
        assert_eq!(std::fs::read(&booted).unwrap(), elf);
        // Made once: a second VM boots the same file.
        std::fs::write(&booted, b"\x7fELF cached").unwrap();
        assert_eq!(kernel_for_host(&kernel, true), booted);
        assert_eq!(std::fs::read(&booted).unwrap(), b"\x7fELF cached");
        // An ELF kernel is booted as it is; a kernel vessel cannot unpack too (it says why).
        let plain = dir.path().join("other/vmlinux-elf");
        std::fs::create_dir_all(plain.parent().unwrap()).unwrap();
        std::fs::write(&plain, &elf).unwrap();
        assert_eq!(kernel_for_host(&plain, true), plain);
        let odd = dir.path().join("other/odd");
        std::fs::write(&odd, b"not a kernel").unwrap();
        assert_eq!(kernel_for_host(&odd, true), odd);
        assert!(!dir.path().join("other/vmlinux").exists());
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gzip = std::process::Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        gzip.stdin.take().unwrap().write_all(data).unwrap();
        gzip.wait_with_output().unwrap().stdout
    }

    #[test]
    fn nested_hosts_boot_the_initrd_decompressed_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let cpio = [b"070701".as_slice(), &[b'0'; 4096], b"TRAILER!!!"].concat();
        let initrd = dir.path().join("initrd.img");
        std::fs::write(&initrd, gzip(&cpio)).unwrap();
        assert_eq!(initrd_for_host(&initrd, false), initrd);
        assert!(!dir.path().join("initrd.cpio").exists());
        let plain = initrd_for_host(&initrd, true);
        assert_eq!(plain, dir.path().join("initrd.cpio"));
        assert_eq!(std::fs::read(&plain).unwrap(), cpio);
        std::fs::write(&plain, b"070701 cached").unwrap();
        assert_eq!(initrd_for_host(&initrd, true), plain);
        // A plain cpio, an unknown format and a gzip of something else boot as they are.
        for (name, data) in [
            ("a/plain", cpio.clone()),
            ("b/odd", b"BZh91AY&SY".to_vec()),
            ("c/text", gzip(b"not an archive")),
        ] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, data).unwrap();
            assert_eq!(initrd_for_host(&path, true), path);
            assert!(!path.with_file_name("initrd.cpio").exists(), "{name}");
        }
    }
}
