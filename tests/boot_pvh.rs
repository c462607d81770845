//! Xen PVH entry on KVM: an ELF with the PHYS32_ENTRY note is entered in 32-bit protected
//! mode with hvm_start_info; the guest prints it back.

mod common;

use common::{out_dir, pvh_guest, vessel, TIMEOUT};

#[test]
fn pvh_guest_gets_start_info_with_cmdline_memmap_and_module() {
    let kernel = pvh_guest("pvh", &["pvh_start.S", "pvh_guest.c"], "pvh.ld");
    let initrd = out_dir().join("pvh-initrd.bin");
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 13) as u8).collect();
    std::fs::write(&initrd, &data).unwrap();
    let r = vessel(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--memory",
            "96M",
            "--cmdline",
            "pvh=yes console=ttyS0",
        ],
        TIMEOUT,
    );
    r.expect_status(0);
    r.expect_stdout("pvh: magic=0x336ec578 version=1\n");
    r.expect_stdout("cmdline: pvh=yes console=ttyS0\n");
    let memmap: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("memmap: "))
        .collect();
    assert_eq!(
        memmap,
        vec![
            "memmap: 0x0 0x9fc00 1".to_string(),
            "memmap: 0x9fc00 0x400 2".to_string(),
            format!("memmap: 0x100000 {:#x} 1", (96u64 << 20) - 0x100000),
        ]
    );
    let hash = common::fnv1a(&data);
    assert!(
        r.stdout
            .contains(&format!("module: size=5000 fnv1a={hash:#x}\n")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("rsdp: 0xe0000\n"));
}
