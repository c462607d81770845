//! Linux 64-bit boot protocol on KVM: an ELF vmlinux-shaped guest and a bzImage-shaped guest
//! print the zero page vessel built; the tests check it against what vessel was given.

mod common;

use std::process::Command;

use common::{elf64_guest, fnv1a, out_dir, vessel, TIMEOUT};

fn e820_lines(memory: u64) -> Vec<String> {
    let low = memory.min(3 << 30);
    let mut v = vec![
        "e820: 0x0 0x9fc00 1".to_string(),
        "e820: 0x9fc00 0x400 2".to_string(),
        format!("e820: 0x100000 {:#x} 1", low - 0x100000),
    ];
    if memory > low {
        v.push(format!("e820: 0x100000000 {:#x} 1", memory - low));
    }
    v
}

fn guest_e820(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("e820: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn elf_vmlinux_gets_zero_page_e820_cmdline_and_initrd() {
    let kernel = elf64_guest(
        "linux64",
        &["linux64_start.S", "linux64_guest.c"],
        "linux64.ld",
    );
    let initrd = out_dir().join("linux64-initrd.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&initrd, &data).unwrap();
    let cmdline = "console=ttyS0 root=/dev/vda vessel.test=\"a b\"";
    let r = vessel(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--memory",
            "256M",
            "--cmdline",
            cmdline,
        ],
        TIMEOUT,
    );
    r.expect_status(0);
    assert!(
        r.stdout
            .contains("boot_params=0x7000 boot_flag=0xaa55 header=0x53726448"),
        "{}",
        r.stdout
    );
    r.expect_stdout("loader=0xff");
    assert_eq!(guest_e820(&r.stdout), e820_lines(256 << 20));
    r.expect_stdout(&format!("cmdline: {cmdline}\n"));
    // The initrd sits at the top of RAM, page aligned, intact.
    let addr = ((256u64 << 20) - data.len() as u64) & !0xfff;
    let want = format!(
        "initrd: addr={addr:#x} size={} fnv1a={:#x}\n",
        data.len(),
        fnv1a(&data)
    );
    assert!(r.stdout.contains(&want), "want {want:?} in {}", r.stdout);
    r.expect_stdout("rsdp: 0xe0000\n");
}

#[test]
fn memory_above_the_mmio_hole_is_mapped_above_4g() {
    let kernel = elf64_guest(
        "linux64",
        &["linux64_start.S", "linux64_guest.c"],
        "linux64.ld",
    );
    let r = vessel(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "4G",
            "--cmdline",
            "x",
        ],
        TIMEOUT,
    );
    assert_eq!(r.status, Some(0), "stderr: {}", r.stderr);
    assert_eq!(guest_e820(&r.stdout), e820_lines(4 << 30));
    assert!(r.stdout.contains("initrd: none\n"));
}

/// Wrap the guest's protected-mode payload in a bzImage: boot sector + one setup sector
/// carrying a protocol 2.15 header with a 64-bit entry (XLF_KERNEL_64).
fn make_bzimage() -> std::path::PathBuf {
    let elf = elf64_guest(
        "bzimage64",
        &["linux64_start.S", "linux64_guest.c"],
        "bzimage64.ld",
    );
    let payload = out_dir().join("bzimage64.bin");
    let st = Command::new("objcopy")
        .args(["-O", "binary"])
        .arg(&elf)
        .arg(&payload)
        .status()
        .unwrap();
    assert!(st.success());
    let mut img = vec![0u8; 1024];
    let put = |img: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        img[off..off + bytes.len()].copy_from_slice(bytes)
    };
    put(&mut img, 0x1f1, &[1]); // setup_sects
    put(&mut img, 0x1fe, &0xaa55u16.to_le_bytes());
    put(&mut img, 0x202, b"HdrS");
    put(&mut img, 0x206, &0x020fu16.to_le_bytes());
    put(&mut img, 0x211, &[0x01]); // loadflags: LOADED_HIGH
    put(&mut img, 0x214, &0x100000u32.to_le_bytes()); // code32_start
    put(&mut img, 0x22c, &0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(&mut img, 0x230, &0x200000u32.to_le_bytes()); // kernel_alignment
    put(&mut img, 0x236, &1u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    put(&mut img, 0x238, &2047u32.to_le_bytes()); // cmdline_size
    img.extend(std::fs::read(&payload).unwrap());
    let path = out_dir().join("bzImage-test");
    std::fs::write(&path, &img).unwrap();
    path
}

#[test]
fn bzimage_boots_through_its_64bit_entry_with_its_setup_header() {
    let kernel = make_bzimage();
    let r = vessel(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "128M",
            "--cmdline",
            "bz=1",
        ],
        TIMEOUT,
    );
    r.expect_status(0);
    r.expect_stdout("version=0x20f loader=0xff");
    r.expect_stdout("cmdline: bz=1\n");
    assert_eq!(guest_e820(&r.stdout), e820_lines(128 << 20));
}

#[test]
fn bzimage_command_line_longer_than_the_kernel_accepts_is_an_input_error() {
    let kernel = make_bzimage();
    let long = "x".repeat(3000);
    let r = vessel(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            &long,
        ],
        TIMEOUT,
    );
    assert_eq!(r.status, Some(2), "stderr: {}", r.stderr);
    assert!(r.stderr.contains("at most 2047"), "stderr: {}", r.stderr);
}

#[test]
fn linux_guests_boot_with_and_without_the_pit() {
    let kernel = elf64_guest(
        "linux64",
        &["linux64_start.S", "linux64_guest.c"],
        "linux64.ld",
    );
    for pit in ["auto", "on", "off"] {
        let r = vessel(
            &[
                "run",
                "--kernel",
                kernel.to_str().unwrap(),
                "--pit",
                pit,
                "--cmdline",
                pit,
            ],
            TIMEOUT,
        );
        r.expect_status(0)
            .expect_stdout(&format!("cmdline: {pit}\n"));
    }
}
