//! OVA appliances and Vagrant boxes end to end: an OVA built here the way VirtualBox writes
//! one (OVF 1.0 text from the spec, a streamOptimized VMDK made by `qemu-img convert -o
//! subformat=streamOptimized`, a manifest) is imported, its VM definition checked and booted;
//! hostile OVAs are refused; `vessel export --format ova` is checked with qemu-img and a
//! structural OVF check and imported back; a libvirt box is imported and booted.
//!
//! The disk holds GPT + ext4 with /boot and grub.cfg like tests/image_run.rs; its "kernel"
//! is the small multiboot guest, which prints its command line and its module's hash and
//! exits, so booting takes milliseconds on any KVM host.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::boot_image::tool;
use common::{fnv1a, multiboot_guest, out_dir};
use sha2::{Digest, Sha256};

const INITRD: &[u8] = b"the appliance's initrd\n";

/// A raw GPT disk whose ext4 partition has /boot (guest kernel, initrd, grub.cfg), or an
/// empty partition when `bootable` is false.
fn raw_disk(dir: &Path, bootable: bool) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("boot/grub")).unwrap();
    if bootable {
        let kernel = multiboot_guest(
            "multiboot",
            &["multiboot_header.S", "multiboot_guest.c"],
            "multiboot.ld",
        );
        std::fs::copy(kernel, root.join("boot/vmlinuz-6.1.0-ova")).unwrap();
        std::fs::write(root.join("boot/initrd.img-6.1.0-ova"), INITRD).unwrap();
        std::fs::write(
            root.join("boot/grub/grub.cfg"),
            "menuentry 'Debian GNU/Linux' {\n\tlinux /boot/vmlinuz-6.1.0-ova root=/dev/vda1 ro marker=ova exit=42\n\tinitrd /boot/initrd.img-6.1.0-ova\n}\n",
        )
        .unwrap();
    }
    common::boot_image::gpt_ext4_disk(&root, dir)
}

fn stream_vmdk(raw: &Path, out: &Path) {
    tool(
        Command::new("qemu-img")
            .args([
                "convert",
                "-f",
                "raw",
                "-O",
                "vmdk",
                "-o",
                "subformat=streamOptimized",
            ])
            .arg(raw)
            .arg(out),
    );
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// VirtualBox's OVF 1.0 for one disk `appliance-disk001.vmdk`, 2 CPUs, 128 MiB, NICs on
/// NAT, HostOnly and Internal, plus controllers, USB, sound and a CD-ROM it does not map.
fn vbox_ovf(capacity: u64) -> String {
    format!(
        r#"<?xml version="1.0"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References><File ovf:id="file1" ovf:href="appliance-disk001.vmdk"/></References>
  <DiskSection><Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="{capacity}" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection><Info>Logical networks used in the package</Info><Network ovf:name="NAT"/><Network ovf:name="HostOnly"/><Network ovf:name="Internal"/></NetworkSection>
  <VirtualSystem ovf:id="appliance">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="96"><Info>The kind of installed guest operating system</Info><Description>Debian_64</Description></OperatingSystemSection>
    <VirtualHardwareSection><Info>Virtual hardware requirements for a virtual machine</Info>
      <Item><rasd:ElementName>2 virtual CPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>128 MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>128</rasd:VirtualQuantity></Item>
      <Item><rasd:ElementName>ideController0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>PIIX4</rasd:ResourceSubType><rasd:ResourceType>5</rasd:ResourceType></Item>
      <Item><rasd:ElementName>sataController0</rasd:ElementName><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceSubType>AHCI</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:ElementName>usb</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceType>23</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:ElementName>sound</rasd:ElementName><rasd:InstanceID>6</rasd:InstanceID><rasd:ResourceType>35</rasd:ResourceType></Item>
      <Item><rasd:Connection>NAT</rasd:Connection><rasd:ElementName>Ethernet adapter on 'NAT'</rasd:ElementName><rasd:InstanceID>7</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item><rasd:Connection>HostOnly</rasd:Connection><rasd:ElementName>Ethernet adapter on 'HostOnly'</rasd:ElementName><rasd:InstanceID>8</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item><rasd:Connection>Internal</rasd:Connection><rasd:ElementName>Ethernet adapter on 'Internal'</rasd:ElementName><rasd:InstanceID>9</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>disk1</rasd:ElementName><rasd:HostResource>/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>10</rasd:InstanceID><rasd:Parent>4</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:ElementName>cdrom1</rasd:ElementName><rasd:InstanceID>11</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>15</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// One tar entry: name, data, and whether it is a symbolic link instead of a file.
type Entry<'a> = (&'a str, Vec<u8>, bool);

fn write_tar(path: &Path, entries: &[Entry<'_>]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data, link) in entries {
        let mut h = tar::Header::new_ustar();
        // By hand, so hostile names get into the archive.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(if *link { 0 } else { data.len() as u64 });
        h.set_mode(0o644);
        h.set_entry_type(if *link {
            tar::EntryType::Symlink
        } else {
            tar::EntryType::Regular
        });
        h.set_cksum();
        b.append(&h, if *link { &[][..] } else { &data[..] })
            .unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
}

/// The entries of a VirtualBox-style OVA: descriptor, disk, SHA256 manifest.
fn ova_entries(ovf: &str, vmdk: &[u8]) -> Vec<Entry<'static>> {
    let mf = format!(
        "SHA256(appliance.ovf)= {}\nSHA256(appliance-disk001.vmdk)= {}\n",
        sha256(ovf.as_bytes()),
        sha256(vmdk)
    );
    vec![
        ("appliance.ovf", ovf.as_bytes().to_vec(), false),
        ("appliance-disk001.vmdk", vmdk.to_vec(), false),
        ("appliance.mf", mf.into_bytes(), false),
    ]
}

struct Home(PathBuf);

impl Home {
    fn new(name: &str) -> Home {
        let d = out_dir().join(format!("ova-{name}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Home(d)
    }
    fn run(&self, args: &[&str]) -> common::Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vessel"));
        // `run` has no state directory (and refuses --state-dir).
        if args.first() != Some(&"run") {
            cmd.arg("--state-dir").arg(self.0.join("state"));
        }
        let start = std::time::Instant::now();
        let out = cmd
            .args(args)
            .env("XDG_DATA_HOME", &self.0)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        common::Run {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: start.elapsed(),
        }
    }
    fn vm_dir(&self, name: &str) -> PathBuf {
        self.0.join("state").join(name)
    }
    fn definition(&self, name: &str) -> toml::Table {
        std::fs::read_to_string(self.vm_dir(name).join("vm.toml"))
            .unwrap()
            .parse()
            .unwrap()
    }
}

fn nic_modes(def: &toml::Table) -> Vec<String> {
    def["nic"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["mode"].as_str().unwrap().to_string())
        .collect()
}

fn compare(a: &Path, b: &Path) {
    tool(Command::new("qemu-img").arg("compare").arg(a).arg(b));
}

/// The appliance booted its own kernel with grub.cfg's command line and its initrd.
fn assert_booted(home: &Home, name: &str) {
    let r = home.run(&["vmm", name]);
    let log = std::fs::read_to_string(home.vm_dir(name).join("serial.log")).unwrap_or_default();
    let all = format!("{}{log}", r.stdout);
    assert!(
        all.contains("root=/dev/vda1 ro marker=ova exit=42 console=ttyS0"),
        "status {:?}\nstdout/log: {all}\nstderr: {}",
        r.status,
        r.stderr
    );
    let module = format!("len={} fnv1a={:#x}", INITRD.len(), fnv1a(INITRD));
    assert!(all.contains(&module), "want {module} in {all}");
}

#[test]
fn virtualbox_ova_imports_maps_hardware_boots_and_exports_back() {
    let home = Home::new("vbox");
    let raw = raw_disk(&home.0, true);
    let vmdk = home.0.join("src.vmdk");
    stream_vmdk(&raw, &vmdk);
    let ovf = vbox_ovf(20 << 20);
    let ova = home.0.join("appliance.ova");
    write_tar(&ova, &ova_entries(&ovf, &std::fs::read(&vmdk).unwrap()));

    let r = home.run(&["import", ova.to_str().unwrap(), "--name", "app"]);
    r.expect_status(0);
    for reported in [
        "usb (ResourceType 23)",
        "sound (ResourceType 35)",
        "cdrom1",
        "ideController0",
        "hostonly:vboxnet0",
    ] {
        assert!(
            r.stdout.contains(reported),
            "{reported} not reported:\n{}",
            r.stdout
        );
    }
    let def = home.definition("app");
    assert_eq!(def["cpus"].as_integer(), Some(2));
    assert_eq!(def["memory"].as_str(), Some("128M"));
    assert_eq!(
        nic_modes(&def),
        ["nat", "hostonly:vboxnet0", "internal:intnet"]
    );
    let disks = def["disk"].as_array().unwrap();
    assert_eq!(disks.len(), 1);
    let disk0 = home.vm_dir("app").join("disk0.qcow2");
    assert_eq!(disks[0]["path"].as_str(), disk0.to_str());
    compare(&disk0, &raw);
    assert_eq!(
        std::fs::read(home.vm_dir("app").join("boot/initrd.img")).unwrap(),
        INITRD
    );
    let names: Vec<_> = std::fs::read_dir(home.vm_dir("app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".vmdk") || n.ends_with(".mf")),
        "{names:?}"
    );
    assert_booted(&home, "app");

    // Export: OVF 1.0 + streamOptimized VMDK + SHA256 manifest, and back.
    let out = home.0.join("out.ova");
    home.run(&["export", "app", "--format", "ova", out.to_str().unwrap()])
        .expect_status(0);
    let unpacked = home.0.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        e.unpack(unpacked.join(&name)).unwrap();
        names.push(name);
    }
    assert_eq!(
        names,
        ["app.ovf", "app-disk001.vmdk", "app.mf"],
        "VirtualBox's order"
    );
    let vmdk_out = unpacked.join("app-disk001.vmdk");
    let info = tool(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&vmdk_out),
    );
    assert!(
        info.contains("\"create-type\": \"streamOptimized\""),
        "{info}"
    );
    compare(&vmdk_out, &disk0);
    let text = std::fs::read_to_string(unpacked.join("app.ovf")).unwrap();
    check_ovf_structure(&text);
    let mf = std::fs::read_to_string(unpacked.join("app.mf")).unwrap();
    assert!(
        mf.contains(&format!("SHA256(app.ovf)= {}", sha256(text.as_bytes()))),
        "{mf}"
    );
    assert!(mf.contains(&format!(
        "SHA256(app-disk001.vmdk)= {}",
        sha256(&std::fs::read(&vmdk_out).unwrap())
    )));

    home.run(&["import", out.to_str().unwrap(), "--name", "again"])
        .expect_status(0);
    let back = home.definition("again");
    assert_eq!(back["cpus"], def["cpus"]);
    assert_eq!(back["memory"], def["memory"]);
    assert_eq!(nic_modes(&back), nic_modes(&def));
    compare(&home.vm_dir("again").join("disk0.qcow2"), &disk0);
}

/// The structure VirtualBox's importer reads (no OVF schema is packaged in Debian).
fn check_ovf_structure(text: &str) {
    let doc = roxmltree::Document::parse(text).unwrap();
    let env = doc.root_element();
    assert_eq!(env.tag_name().name(), "Envelope");
    assert_eq!(
        env.tag_name().namespace(),
        Some("http://schemas.dmtf.org/ovf/envelope/1")
    );
    let names: Vec<&str> = env
        .children()
        .filter(|c| c.is_element())
        .map(|c| c.tag_name().name())
        .collect();
    assert_eq!(
        names,
        [
            "References",
            "DiskSection",
            "NetworkSection",
            "VirtualSystem"
        ]
    );
    let vs = env
        .children()
        .find(|c| c.tag_name().name() == "VirtualSystem")
        .unwrap();
    let sections: Vec<&str> = vs
        .children()
        .filter(|c| c.is_element())
        .map(|c| c.tag_name().name())
        .collect();
    assert_eq!(
        sections,
        [
            "Info",
            "Name",
            "OperatingSystemSection",
            "VirtualHardwareSection"
        ]
    );
    let mut types: Vec<String> = vs
        .descendants()
        .filter(|n| n.tag_name().name() == "ResourceType")
        .map(|n| n.text().unwrap().to_string())
        .collect();
    types.sort();
    assert_eq!(types, ["10", "10", "10", "17", "20", "3", "4"]);
    for id in vs
        .descendants()
        .filter(|n| n.tag_name().name() == "InstanceID")
    {
        assert!(id.text().unwrap().parse::<u32>().is_ok());
    }
}

#[test]
fn hostile_or_broken_ovas_are_refused_and_leave_nothing() {
    let home = Home::new("bad");
    let raw = raw_disk(&home.0, true);
    let vmdk_path = home.0.join("src.vmdk");
    stream_vmdk(&raw, &vmdk_path);
    let vmdk = std::fs::read(&vmdk_path).unwrap();
    let ovf = vbox_ovf(20 << 20);
    let good = ova_entries(&ovf, &vmdk);

    let mut tampered = good.clone();
    tampered[1].1[600] ^= 1;
    let mut missing = good.clone();
    missing.remove(1);
    missing[1].1 = format!("SHA256(appliance.ovf)= {}\n", sha256(ovf.as_bytes())).into_bytes();
    let mut dotdot = good.clone();
    dotdot.insert(1, ("../escape.vmdk", b"x".to_vec(), false));
    let mut link = good.clone();
    link.insert(1, ("appliance-disk002.vmdk", Vec::new(), true));
    let blank_dir = home.0.join("blank");
    std::fs::create_dir_all(&blank_dir).unwrap();
    let blank_raw = raw_disk(&blank_dir, false);
    let blank_vmdk = blank_dir.join("b.vmdk");
    stream_vmdk(&blank_raw, &blank_vmdk);
    let blank = ova_entries(&ovf, &std::fs::read(&blank_vmdk).unwrap());
    let wrong_size = vbox_ovf(20 << 20).replace(
        "ovf:href=\"appliance-disk001.vmdk\"",
        "ovf:href=\"appliance-disk001.vmdk\" ovf:size=\"1\"",
    );
    let sized = ova_entries(&wrong_size, &vmdk);
    let cases: [(&str, Vec<Entry<'_>>, &str); 6] = [
        ("sized", sized, "but the OVF's References say 1; refused"),
        ("tampered", tampered, "does not match"),
        ("missing", missing, "which the OVA does not hold"),
        ("dotdot", dotdot, "'../escape.vmdk' is refused"),
        ("link", link, "only regular files"),
        ("blank", blank, "holds no Linux vessel can boot directly"),
    ];
    for (what, entries, want) in cases {
        let ova = home.0.join(format!("{what}.ova"));
        write_tar(&ova, &entries);
        let r = home.run(&["import", ova.to_str().unwrap(), "--name", what]);
        assert_ne!(r.status, Some(0), "{what} was imported");
        assert!(
            r.stderr.contains(want),
            "{what}: want {want:?} in {}",
            r.stderr
        );
        assert!(!home.vm_dir(what).exists(), "{what} left a VM");
        assert!(!home.0.join("escape.vmdk").exists());
        let left: Vec<_> = std::fs::read_dir(home.0.join("state"))
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.iter()
                .all(|n| !n.to_string_lossy().starts_with(".ova")),
            "{left:?}"
        );
    }
}

#[test]
fn libvirt_box_imports_and_boots_and_a_box_without_metadata_is_refused() {
    let home = Home::new("box");
    let raw = raw_disk(&home.0, true);
    let img = home.0.join("box.qcow2");
    tool(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&img),
    );
    let meta = br#"{"provider":"libvirt","format":"qcow2","virtual_size":1}"#.to_vec();
    let plain = home.0.join("deb.box");
    write_tar(
        &plain,
        &[
            ("metadata.json", meta, false),
            ("box.img", std::fs::read(&img).unwrap(), false),
            (
                "Vagrantfile",
                b"Vagrant.configure(\"2\") do |c| end\n".to_vec(),
                false,
            ),
        ],
    );
    let gz = home.0.join("deb-gz.box");
    tool(Command::new("sh").arg("-c").arg(format!(
        "gzip -c {} > {}",
        plain.display(),
        gz.display()
    )));
    for (file, name) in [(&plain, "deb"), (&gz, "debgz")] {
        home.run(&["image", "import", file.to_str().unwrap(), "--name", name])
            .expect_status(0);
        let r = home.run(&["run", "--image", name, "--memory", "128M"]);
        assert!(
            r.stdout.contains("marker=ova exit=42"),
            "{}\n{}",
            r.stdout,
            r.stderr
        );
    }
    let bare = home.0.join("bare.box");
    write_tar(&bare, &[("box.img", std::fs::read(&img).unwrap(), false)]);
    let r = home.run(&["image", "import", bare.to_str().unwrap(), "--name", "bare"]);
    assert_ne!(r.status, Some(0));
    assert!(r.stderr.contains("no metadata.json"), "{}", r.stderr);
}
