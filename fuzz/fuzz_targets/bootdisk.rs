//! Hostile images for bootdisk: arbitrary bytes as a raw disk through `find_boot`
//! (partition tables, file system probing, ext4, grub.cfg), and arbitrary text through the
//! grub.cfg parser. The first byte picks the mode.
#![no_main]

use bootdisk::memdisk::MemDisk;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let mut disk: Box<dyn block::DiskImage> = Box::new(MemDisk::new(rest.to_vec()));
        let _ = bootdisk::find_boot(&mut disk);
        assert_eq!(disk.size(), rest.len() as u64, "the disk is handed back");
    } else {
        let text = String::from_utf8_lossy(rest);
        let (cfg, env) = text.split_once('\0').unwrap_or((&text, ""));
        if let Ok(config) = bootdisk::grub::parse(cfg, Some(env)) {
            let _ = config.titles();
            let _ = config.default_entry();
        }
    }
});
