//! Small bootable disk images for the image tests: a GPT disk with one ext4 partition
//! (sgdisk, mkfs.ext4 -d) holding /boot with a test kernel, an initrd and a grub.cfg whose
//! default entry (the second) boots the kernel with the given words, converted by qemu-img.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::out_dir;

/// What the images' initrd holds.
pub const INITRD: &[u8] = b"the image's own initrd\n";

/// Runs `cmd`, which must succeed; returns its standard output.
pub fn tool(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `image-NAME/disk.FORMAT`: grub.cfg's default entry boots `kernel` with `words`.
pub fn make(name: &str, kernel: &Path, words: &str, format: &str) -> PathBuf {
    let dir = out_dir().join(format!("image-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("boot/grub")).unwrap();
    std::fs::copy(kernel, root.join("boot/vmlinuz-6.1.0-test")).unwrap();
    std::fs::write(root.join("boot/initrd.img-6.1.0-test"), INITRD).unwrap();
    let grub = format!(
        "set default=\"1\"\n\
         menuentry 'rescue' {{\n\tlinux /boot/vmlinuz-6.1.0-test rescue exit=9\n}}\n\
         menuentry 'Debian GNU/Linux' --class debian {{\n\
         \tinsmod ext2\n\
         \tlinux\t/boot/vmlinuz-6.1.0-test root=UUID=0b3ea1ed-0000-4000-8000-000000000001 ro {words}\n\
         \tinitrd\t/boot/initrd.img-6.1.0-test\n}}\n"
    );
    std::fs::write(root.join("boot/grub/grub.cfg"), grub).unwrap();
    let raw = gpt_ext4_disk(&root, &dir);
    if format == "raw" {
        return raw;
    }
    let out = dir.join(format!("disk.{format}"));
    tool(
        Command::new("qemu-img")
            .args(["convert", "-O", format])
            .arg(&raw)
            .arg(&out),
    );
    out
}

/// `DIR/disk.raw`: a 20 MiB GPT disk whose one partition (from 1 MiB) is a 16 MiB ext4
/// file system holding the files under `root`.
pub fn gpt_ext4_disk(root: &Path, dir: &Path) -> PathBuf {
    let fs = dir.join("fs.ext4");
    tool(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(root)
            .arg(&fs)
            .arg("16M"),
    );
    let raw = dir.join("disk.raw");
    tool(Command::new("truncate").args(["-s", "20M"]).arg(&raw));
    tool(
        Command::new("sgdisk")
            .args(["-n", "1:2048:0", "-t", "1:8300"])
            .arg(&raw),
    );
    tool(
        Command::new("dd")
            .arg(format!("if={}", fs.display()))
            .arg(format!("of={}", raw.display()))
            .args(["bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"]),
    );
    raw
}
