//! Helpers for the image tests: find host tools (skip with a message when one is missing,
//! unless VESSEL_REQUIRE_TCG is set), build ext4 file systems with `mkfs.ext4 -d`, lay out
//! GPT / MBR disks with `sgdisk` / `sfdisk` and convert them with `qemu-img`.

#![allow(dead_code)]

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MIB: u64 = 1 << 20;
/// Start of the first partition (sector 2048).
pub const P1: u64 = MIB;

/// Path of host tool `name` (PATH, then /usr/sbin and /sbin).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether every tool is installed. When one is missing the test is skipped with a
/// message, or fails when VESSEL_REQUIRE_TCG is set.
pub fn have(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| tool(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "missing host tools {missing:?} (Debian packages: gdisk fdisk e2fsprogs qemu-utils coreutils)"
    );
    if std::env::var_os("VESSEL_REQUIRE_TCG").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIP: {msg}");
    false
}

/// Run a host tool; panics with its output when it fails.
pub fn run(name: &str, args: &[&str]) {
    let exe = tool(name).unwrap_or_else(|| panic!("{name} not installed"));
    let out = Command::new(&exe).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run a host tool with `input` on stdin.
pub fn run_stdin(name: &str, args: &[&str], input: &str) {
    let exe = tool(name).unwrap_or_else(|| panic!("{name} not installed"));
    let mut child = Command::new(&exe)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A file tree to put into a file system: (path, content) files and (path, target) links.
#[derive(Default)]
pub struct Tree {
    pub files: Vec<(String, Vec<u8>)>,
    pub links: Vec<(String, String)>,
    pub dirs: Vec<String>,
}

impl Tree {
    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>) -> Tree {
        self.files.push((path.into(), data.into()));
        self
    }
    pub fn link(mut self, path: &str, target: &str) -> Tree {
        self.links.push((path.into(), target.into()));
        self
    }
    pub fn dir(mut self, path: &str) -> Tree {
        self.dirs.push(path.into());
        self
    }

    fn materialize(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for d in &self.dirs {
            std::fs::create_dir_all(dir.join(d.trim_start_matches('/'))).unwrap();
        }
        for (p, data) in &self.files {
            let p = dir.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        for (p, target) in &self.links {
            let p = dir.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, p).unwrap();
        }
    }
}

/// Make an ext4 image file of `size_mib` holding `tree`.
pub fn mkfs(
    work: &Path,
    name: &str,
    tree: &Tree,
    uuid: &str,
    label: &str,
    size_mib: u64,
) -> PathBuf {
    let src = work.join(format!("{name}.d"));
    tree.materialize(&src);
    let img = work.join(format!("{name}.ext4"));
    let size = format!("{size_mib}M");
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            src.to_str().unwrap(),
            "-U",
            uuid,
            "-L",
            label,
            img.to_str().unwrap(),
            &size,
        ],
    );
    img
}

/// Write `data` into `file` at `offset`.
pub fn write_at(file: &Path, offset: u64, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(data).unwrap();
}

/// Copy the file system image `fs` into `disk` at `offset` (as `dd conv=notrunc` would).
pub fn place(disk: &Path, offset: u64, fs: &Path) {
    write_at(disk, offset, &std::fs::read(fs).unwrap());
}

/// A GPT disk of `size_mib` with partitions of the given MiB sizes (type 8300, unique
/// GUIDs from `part_uuids`), the first at 1 MiB, each following the previous.
pub fn gpt_disk(work: &Path, size_mib: u64, parts: &[(u64, &str)]) -> PathBuf {
    let disk = work.join("disk.raw");
    run(
        "truncate",
        &["-s", &format!("{size_mib}M"), disk.to_str().unwrap()],
    );
    let mut args = vec!["--clear".to_string()];
    for (i, (mib, uuid)) in parts.iter().enumerate() {
        let n = i + 1;
        let start = if i == 0 {
            "2048".to_string()
        } else {
            "0".to_string()
        };
        args.push(format!("--new={n}:{start}:+{mib}M"));
        args.push(format!("--typecode={n}:8300"));
        args.push(format!("--partition-guid={n}:{uuid}"));
    }
    args.push(disk.to_str().unwrap().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("sgdisk", &args);
    disk
}

/// An MBR disk of `size_mib` with one Linux partition of `part_mib` at 1 MiB.
pub fn mbr_disk(work: &Path, size_mib: u64, part_mib: u64) -> PathBuf {
    let disk = work.join("disk.raw");
    run(
        "truncate",
        &["-s", &format!("{size_mib}M"), disk.to_str().unwrap()],
    );
    let script = format!(
        "label: dos\nlabel-id: 0x12345678\nstart=2048, size={}, type=83, bootable\n",
        part_mib * 2048
    );
    run_stdin("sfdisk", &["-q", disk.to_str().unwrap()], &script);
    disk
}

/// `qemu-img convert` `raw` to `format`.
pub fn convert(raw: &Path, format: &str) -> PathBuf {
    let out = raw.with_extension(format);
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            format,
            raw.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    out
}

/// Open an image read-only through vessel's block layer.
pub fn open(path: &Path) -> Box<dyn block::DiskImage> {
    block::open(
        path,
        &block::OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Recognisable fake kernel / initrd contents.
pub fn blob(tag: &str, len: usize) -> Vec<u8> {
    tag.bytes().cycle().take(len).collect()
}
