//! grub.cfg tests over realistic grub-mkconfig output (tests/data) and odd syntax.

use super::*;

const DEBIAN: &str = include_str!("../../tests/data/debian12-genericcloud.grub.cfg");
const UBUNTU22: &str = include_str!("../../tests/data/ubuntu2204-cloud.grub.cfg");
const UBUNTU24: &str = include_str!("../../tests/data/ubuntu2404-saved.grub.cfg");

fn entry(text: &str) -> BootEntry {
    parse(text, None).unwrap().default_entry().unwrap()
}

#[test]
fn debian_genericcloud_default() {
    let e = entry(DEBIAN);
    assert_eq!(e.title, "Debian GNU/Linux");
    assert_eq!(e.kernel, "/boot/vmlinuz-6.1.0-28-cloud-amd64");
    assert_eq!(e.initrds, vec!["/boot/initrd.img-6.1.0-28-cloud-amd64"]);
    assert_eq!(
        e.cmdline,
        "root=PARTUUID=8e3b5c1a-2f4d-4b6e-9a7c-1d2e3f4a5b6c ro console=tty0 \
         console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0"
    );
    let cfg = parse(DEBIAN, None).unwrap();
    assert_eq!(cfg.titles().len(), 4, "{:?}", cfg.titles());
    assert!(cfg.titles()[2].starts_with("Advanced options for Debian GNU/Linux>"));
}

#[test]
fn ubuntu_2204_drops_vt_handoff() {
    let e = entry(UBUNTU22);
    assert_eq!(e.title, "Ubuntu");
    assert_eq!(e.kernel, "/boot/vmlinuz-5.15.0-126-generic");
    assert_eq!(e.initrds, vec!["/boot/initrd.img-5.15.0-126-generic"]);
    assert_eq!(
        e.cmdline,
        "root=LABEL=cloudimg-rootfs ro console=tty1 console=ttyS0"
    );
}

#[test]
fn next_entry_from_grubenv_picks_submenu_entry() {
    let env = "# GRUB Environment Block\nnext_entry=1>1\n#########";
    let e = parse(UBUNTU22, Some(env)).unwrap().default_entry().unwrap();
    assert!(e.title.ends_with("(recovery mode)"), "{}", e.title);
    assert!(e.cmdline.contains("recovery nomodeset"));
}

#[test]
fn saved_entry_by_id_path_and_unknown_saved_entry() {
    assert_eq!(entry(UBUNTU24).title, "Ubuntu");
    let env = "saved_entry=gnulinux-advanced-0b7d0e3c-3f4a-4e55-8f2a-7b1c9d0e1f23>\
               Ubuntu, with Linux 6.8.0-45-generic\n";
    let e = parse(UBUNTU24, Some(env)).unwrap().default_entry().unwrap();
    assert_eq!(e.kernel, "/boot/vmlinuz-6.8.0-45-generic");
    assert_eq!(
        e.initrds,
        vec!["/boot/intel-ucode.img", "/boot/initrd.img-6.8.0-45-generic"]
    );
    let e = parse(UBUNTU24, Some("saved_entry=no such entry\n"))
        .unwrap()
        .default_entry()
        .unwrap();
    assert_eq!(e.title, "Ubuntu");
}

#[test]
fn default_by_number_title_and_submenu() {
    let cfg = "set default=\"1\"\nmenuentry 'A' { linux /a; }\nmenuentry \"B\" {\n linux (hd0,msdos1)/b x=1\n initrd /ib\n}\n";
    let e = entry(cfg);
    assert_eq!(
        (e.title.as_str(), e.kernel.as_str(), e.cmdline.as_str()),
        ("B", "/b", "x=1")
    );
    let cfg = "set default='B'\nmenuentry 'A' { linux /a; }\nmenuentry B { linux /b; }\n";
    assert_eq!(entry(cfg).kernel, "/b");
    let cfg = "default=1\nmenuentry A { linux /a; }\nsubmenu S {\n menuentry X { linux /x; }\n}\n";
    assert_eq!(entry(cfg).kernel, "/x");
    let cfg = "set default=7\nmenuentry A { linux /a; }\n";
    assert_eq!(entry(cfg).kernel, "/a");
}

#[test]
fn variables_quoting_and_continuations() {
    let cfg = "set k=/vmlinuz\nset extra=\"quiet  splash\"\nmenuentry 'T' {\n\
               linux ${k}-6 root=UUID=abc \\\n   ro $extra $unknown 'a b' \"c$k\"\n}\n";
    let e = entry(cfg);
    assert_eq!(e.kernel, "/vmlinuz-6");
    assert_eq!(e.cmdline, "root=UUID=abc ro quiet  splash a b c/vmlinuz");
}

#[test]
fn body_uses_final_variables() {
    let cfg = "menuentry T { linux /k $opt; }\nset opt=late\n";
    assert_eq!(entry(cfg).cmdline, "late");
}

#[test]
fn errors() {
    assert_eq!(
        parse("set a=b\n", None).unwrap().default_entry(),
        Err(Error::NoEntries)
    );
    assert_eq!(
        parse("menuentry T { echo hi; }\n", None)
            .unwrap()
            .default_entry(),
        Err(Error::NoLinux { title: "T".into() })
    );
    assert!(matches!(
        parse("menuentry T {\nlinux /k\n", None),
        Err(Error::Syntax { .. })
    ));
    assert!(matches!(
        parse("submenu S {\n}\n", None).unwrap().default_entry(),
        Err(Error::NoEntries)
    ));
}

#[test]
fn never_panics_on_fragments() {
    let all = format!("{DEBIAN}{UBUNTU22}{UBUNTU24}");
    let bytes = all.as_bytes();
    for cut in (0..bytes.len()).step_by(97) {
        let text = String::from_utf8_lossy(&bytes[..cut]);
        if let Ok(cfg) = parse(&text, Some("saved_entry=1>0")) {
            let _ = cfg.default_entry();
        }
        let text = String::from_utf8_lossy(&bytes[cut..]);
        if let Ok(cfg) = parse(&text, None) {
            let _ = cfg.default_entry();
        }
    }
}
