//! `vessel image` and `vessel run --image` on real disk images (GPT + ext4 made with sgdisk
//! and mkfs.ext4, converted by qemu-img): vessel finds the kernel, initrd and command line
//! of grub.cfg's default entry and boots them. The "kernel" is a small multiboot guest that
//! prints the command line and a hash of its module, so the whole path runs in milliseconds
//! on any KVM host.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{fnv1a, multiboot_guest, out_dir};

use common::boot_image::INITRD;

/// A GPT disk with one ext4 partition holding /boot with the guest kernel, an initrd and a
/// grub.cfg whose default entry (the second) carries `marker`, as `format`.
fn boot_image(name: &str, marker: &str, format: &str) -> PathBuf {
    let kernel = multiboot_guest(
        "multiboot",
        &["multiboot_header.S", "multiboot_guest.c"],
        "multiboot.ld",
    );
    common::boot_image::make(name, &kernel, &format!("{marker} exit=42"), format)
}

struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

fn vessel(data_home: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vessel"));
    // `run` has no state directory (and refuses --state-dir).
    if args.first() != Some(&"run") {
        cmd.arg("--state-dir").arg(data_home.join("state"));
    }
    let out = cmd
        .args(args)
        .env("XDG_DATA_HOME", data_home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn data_home(name: &str) -> PathBuf {
    let d = out_dir().join(format!("data-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The guest ran grub.cfg's default entry with its initrd, on vessel's console.
fn assert_booted_default_entry(r: &Run, marker: &str) {
    assert_eq!(
        r.status,
        Some((42 << 1) | 1),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    let cmdline = r
        .stdout
        .lines()
        .find(|l| l.starts_with("cmdline: "))
        .unwrap();
    assert!(
        cmdline.contains(&format!(
            "root=UUID=0b3ea1ed-0000-4000-8000-000000000001 ro {marker} exit=42 console=ttyS0"
        )),
        "{cmdline}"
    );
    let module = format!("len={} fnv1a={:#x}", INITRD.len(), fnv1a(INITRD));
    assert!(r.stdout.contains(&module), "want {module} in {}", r.stdout);
}

#[test]
fn run_image_file_boots_grubs_default_entry_from_any_format() {
    for format in ["raw", "qcow2", "vmdk", "vhdx"] {
        let img = boot_image(&format!("file-{format}"), "marker=file", format);
        let home = data_home(&format!("file-{format}"));
        let r = vessel(
            &home,
            &["run", "--image", img.to_str().unwrap(), "--memory", "128M"],
        );
        assert_booted_default_entry(&r, "marker=file");
    }
}

#[test]
fn imported_image_boots_by_name_and_is_removed() {
    let img = boot_image("store", "marker=store", "qcow2");
    let home = data_home("store");
    let r = vessel(
        &home,
        &["image", "import", img.to_str().unwrap(), "--name", "deb"],
    );
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    let ls = vessel(&home, &["image", "ls"]);
    assert!(
        ls.stdout.contains("deb") && ls.stdout.contains("qcow2"),
        "{}",
        ls.stdout
    );
    let again = vessel(
        &home,
        &["image", "import", img.to_str().unwrap(), "--name", "deb"],
    );
    assert_eq!(
        again.status,
        Some(2),
        "a name already taken (docs/vm-definition.md)"
    );
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);

    let r = vessel(
        &home,
        &[
            "run",
            "--image",
            "deb",
            "--memory",
            "128M",
            "--cmdline-append",
            "extra=1",
        ],
    );
    assert_booted_default_entry(&r, "marker=store");
    assert!(r.stdout.contains("extra=1"), "{}", r.stdout);
    let base = home.join("vessel/images/deb/base.qcow2");
    assert!(base.is_file());

    // A vessel box of the image imports under another name and boots the same entry.
    let boxed = home.join("deb.box");
    let _ = std::fs::remove_file(&boxed);
    let r = vessel(&home, &["image", "box", "deb", boxed.to_str().unwrap()]);
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    let again = vessel(&home, &["image", "box", "deb", boxed.to_str().unwrap()]);
    assert_eq!(again.status, Some(2), "{}", again.stderr);
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
    let r = vessel(
        &home,
        &[
            "image",
            "import",
            boxed.to_str().unwrap(),
            "--name",
            "boxed",
        ],
    );
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    let r = vessel(&home, &["run", "--image", "boxed", "--memory", "128M"]);
    assert_booted_default_entry(&r, "marker=store");
    assert_eq!(vessel(&home, &["image", "rm", "boxed"]).status, Some(0));

    assert_eq!(vessel(&home, &["image", "rm", "deb"]).status, Some(0));
    let gone = vessel(&home, &["run", "--image", "deb"]);
    assert_eq!(gone.status, Some(2));
    assert!(
        gone.stderr.contains("no image of that name"),
        "{}",
        gone.stderr
    );
}

#[test]
fn images_vessel_cannot_boot_are_refused_with_the_reason() {
    let home = data_home("bad");
    let dir = out_dir().join("image-bad");
    std::fs::create_dir_all(&dir).unwrap();
    // No partition table, no file system.
    let blank = dir.join("blank.raw");
    std::fs::write(&blank, vec![0u8; 4 << 20]).unwrap();
    // A truncated qcow2.
    let img = boot_image("bad-src", "m", "qcow2");
    let truncated = dir.join("truncated.qcow2");
    std::fs::write(&truncated, &std::fs::read(&img).unwrap()[..300]).unwrap();
    for (path, why) in [
        (&blank, "cannot boot this image directly"),
        (&truncated, ""),
    ] {
        for args in [
            vec!["run", "--image", path.to_str().unwrap()],
            vec!["image", "import", path.to_str().unwrap(), "--name", "x"],
        ] {
            let r = vessel(&home, &args);
            assert!(matches!(r.status, Some(1 | 2)), "{args:?}: {}", r.stderr);
            assert!(
                r.stderr.contains("error") && r.stderr.contains(why),
                "{args:?}: {}",
                r.stderr
            );
        }
    }
    let ls = vessel(&home, &["image", "ls"]);
    assert!(
        !ls.stdout.lines().any(|l| l.trim_start().starts_with("x ")),
        "a failed import left {}",
        ls.stdout
    );
}

#[test]
fn create_from_an_image_makes_overlay_seed_and_ssh_forward() {
    let img = boot_image("create", "marker=create", "qcow2");
    let home = data_home("create");
    assert_eq!(
        vessel(
            &home,
            &["image", "import", img.to_str().unwrap(), "--name", "deb"]
        )
        .status,
        Some(0)
    );

    // Bad user-data is refused before anything is made.
    let bad = home.join("bad.yaml");
    std::fs::write(&bad, "#cloud-config\npackages: [a, b\n").unwrap();
    let r = vessel(
        &home,
        &[
            "create",
            "web",
            "--image",
            "deb",
            "--user-data",
            bad.to_str().unwrap(),
        ],
    );
    assert_eq!(r.status, Some(1));
    assert!(r.stderr.contains("line"), "{}", r.stderr);
    assert!(
        !home.join("state/web").exists(),
        "a failed create left the VM's directory"
    );
    let r = vessel(&home, &["create", "web", "--image", "nosuch"]);
    assert!(r.stderr.contains("no image named 'nosuch'"), "{}", r.stderr);

    let extra = home.join("extra.yaml");
    std::fs::write(&extra, "#cloud-config\npackages: [htop]\n").unwrap();
    let r = vessel(
        &home,
        &[
            "create",
            "web",
            "--image",
            "deb",
            "--disk-size",
            "64M",
            "--user-data",
            extra.to_str().unwrap(),
        ],
    );
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    let def = std::fs::read_to_string(home.join("state/web/vm.toml")).unwrap();
    let def: toml::Table = def.parse().unwrap();
    assert_eq!(def["image"].as_str(), Some("deb"));
    assert_eq!(def["ssh"]["user"].as_str(), Some("debian"));
    let disks = def["disk"].as_array().unwrap();
    assert_eq!(disks[0]["id"].as_str(), Some("root"));
    assert_eq!(disks[1]["id"].as_str(), Some("cidata"));
    assert_eq!(disks[1]["readonly"].as_bool(), Some(true));
    let nic = &def["nic"].as_array().unwrap()[0];
    assert!(nic["mac"].as_str().unwrap().starts_with("52:54:00:"));
    assert!(nic["forward"][0].as_str().unwrap().ends_with("-:22"));
    assert!(def["boot"]["cmdline"]
        .as_str()
        .unwrap()
        .contains("marker=create"));

    // The seed is a FAT volume labelled CIDATA with the owner's key in user-data.
    let seed = home.join("state/web/seed.img");
    let out = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(&seed)
        .output()
        .unwrap();
    let blkid = String::from_utf8_lossy(&out.stdout);
    assert!(
        blkid.contains("LABEL=CIDATA") && blkid.contains("TYPE=vfat"),
        "{blkid}"
    );
    let out = Command::new("mtype")
        .arg("-i")
        .arg(&seed)
        .arg("::user-data")
        .output()
        .unwrap();
    let user_data = String::from_utf8_lossy(&out.stdout);
    let key = std::fs::read_to_string(home.join("vessel/ssh/id_ed25519.pub")).unwrap();
    let key_blob = key.split_whitespace().nth(1).unwrap();
    // The user's part goes in unchanged (base64); vessel's part merges into it.
    assert!(
        user_data.contains(key_blob) && user_data.contains("filename=\"user-data\""),
        "{user_data}"
    );
    // The overlay is 64 MiB, backed by the store's base image.
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(home.join("state/web/disk.qcow2"))
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], 64 << 20);
    assert!(info["backing-filename"]
        .as_str()
        .unwrap()
        .ends_with("images/deb/base.qcow2"));

    let busy = vessel(&home, &["image", "rm", "deb"]);
    assert!(
        busy.stderr.contains("in use by VM(s) web"),
        "{}",
        busy.stderr
    );
    assert_eq!(
        vessel(
            &home,
            &["validate", home.join("state/web/vm.toml").to_str().unwrap()]
        )
        .status,
        Some(0)
    );
}

#[test]
fn image_ssh_and_cp_commands_refuse_bad_input() {
    let home = data_home("bad-input");
    let cases: &[(&[&str], &str)] = &[
        (
            &["image", "build", "x", "--suite", "debian-99"],
            "debian-99",
        ),
        (&["image", "rm", "nosuch"], "no image named 'nosuch'"),
        (
            &["image", "import", "/nonexistent.qcow2", "--name", "x"],
            "/nonexistent.qcow2",
        ),
        (
            &["image", "import", "/etc/hostname", "--name", "../x"],
            "invalid image name",
        ),
        (&["cp", "./a", "./b"], "NAME:PATH on exactly one side"),
        (&["cp", "a:/x", "b:/y"], "NAME:PATH on exactly one side"),
        (&["cp", "./a", "nosuch:/x"], "nosuch"),
        (&["ssh", "nosuch"], "nosuch"),
        (
            &["run", "--disk-size", "1G", "--kernel", "/x"],
            "--disk-size is only for --image",
        ),
        (
            &[
                "create",
                "k",
                "--kernel",
                "/etc/hostname",
                "--user-data",
                "/etc/hostname",
            ],
            "--user-data is only for VMs made from an image",
        ),
    ];
    for (args, want) in cases {
        let r = vessel(&home, args);
        assert!(
            matches!(r.status, Some(1 | 2)),
            "{args:?}: {:?} {}",
            r.status,
            r.stderr
        );
        assert!(
            r.stderr.contains(want),
            "{args:?}: want {want:?} in {}",
            r.stderr
        );
    }
}

#[test]
fn cmdline_append_extends_a_kernel_vms_command_line_too() {
    let home = data_home("append");
    let r = vessel(
        &home,
        &[
            "create",
            "k",
            "--kernel",
            "/etc/hostname",
            "--cmdline-append",
            "extra=1",
        ],
    );
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    let def = std::fs::read_to_string(home.join("state/k/vm.toml")).unwrap();
    assert!(
        def.contains("console=ttyS0 reboot=k panic=-1 extra=1"),
        "{def}"
    );
}

/// The VM's SSH port as `vessel ls --json` reports it (`None` when it forwards none).
fn ls_ssh_port(home: &Path, name: &str) -> Option<u64> {
    let ls = vessel(home, &["ls", "--json"]);
    let vms: serde_json::Value = serde_json::from_str(&ls.stdout).unwrap();
    let vm = vms
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap();
    vm["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["guest_port"] == 22)
        .map(|p| p["host_port"].as_u64().unwrap())
}

#[test]
fn image_vm_ssh_port_is_chosen_at_start() {
    let img = boot_image("ports", "marker=ports", "qcow2");
    let home = data_home("ports");
    let import = ["image", "import", img.to_str().unwrap(), "--name", "deb"];
    assert_eq!(vessel(&home, &import).status, Some(0));
    for name in ["a", "b"] {
        let args = ["create", name, "--image", "deb", "--memory", "128M"];
        let r = vessel(
            &home,
            &[&args[..], &["--cmdline-append", "hang=1"]].concat(),
        );
        assert_eq!(r.status, Some(0), "{}", r.stderr);
        let def = std::fs::read_to_string(home.join(format!("state/{name}/vm.toml"))).unwrap();
        assert!(def.contains("tcp:127.0.0.1:auto-:22"), "{def}");
        // No port before start.
        assert_eq!(ls_ssh_port(&home, name), None);
    }
    let start = |name: &str| {
        let r = vessel(&home, &["start", name]);
        assert_eq!(r.status, Some(0), "{}", r.stderr);
        let port = ls_ssh_port(&home, name).expect("a running VM shows its SSH port");
        let inspect = vessel(&home, &["inspect", name]);
        assert!(
            inspect
                .stdout
                .contains(&format!("tcp:127.0.0.1:{port}-:22")),
            "{}",
            inspect.stdout
        );
        // The VMM listens there.
        std::net::TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
        port
    };
    let stop = |name: &str| {
        let r = vessel(&home, &["stop", name, "--force"]);
        assert_eq!(r.status, Some(0), "{}", r.stderr);
    };
    let first = start("a");
    stop("a");
    // Another program takes the port between two starts: the next start picks another.
    // (The stopped VM's passt may hold it for a moment after the VMM ended.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let _taken = loop {
        match std::net::TcpListener::bind(("127.0.0.1", first as u16)) {
            Ok(l) => break l,
            Err(e) if std::time::Instant::now() > deadline => panic!("port {first}: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    let second = start("a");
    assert_ne!(second, first);
    let other = start("b");
    assert!(
        other != second && other != first,
        "{other} {second} {first}"
    );
    stop("a");
    stop("b");
    assert_eq!(ls_ssh_port(&home, "a"), None);
}
