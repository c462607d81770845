//! From Debian's packages to `vessel ssh`, under QEMU's software CPU (TCG): `vessel image
//! build` makes a Debian 12 cloud image, `vessel create --image` makes the VM (overlay,
//! cloud-init seed with vessel's key, NAT NIC with SSH forwarded), and QEMU boots exactly
//! the kernel, initrd and command line of its definition with vessel's devices behind it:
//! the overlay and the seed served by `vessel vhost-user-blk`, the NIC by `vessel
//! vhost-user-net` on vessel's NAT forwarding the port the test chose as `vessel start` would. Then `vessel ssh` (vessel's key,
//! known_hosts from the host keys cloud-init printed on the console) and `vessel cp` run
//! for real with OpenSSH.
//!
//! On a hardware-KVM host `vessel start` runs the same VM; this host's nested KVM runs
//! systemd far too slowly for that (docs/images.md).

mod common;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::out_dir;
use common::tcg::{self, Served};

/// Build image, boot Debian with systemd and cloud-init under TCG, reach sshd.
const SSH_TIMEOUT: &str = "900";

fn vessel(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--state-dir")
        .arg(home.join("state"))
        .args(args)
        .env("XDG_DATA_HOME", home)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(home: &Path, args: &[&str]) -> String {
    let out = vessel(home, args);
    assert!(
        out.status.success(),
        "vessel {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Hold the VM's lock as its VMM would, so vessel sees it running.
fn hold_lock(vm_dir: &Path) -> std::fs::File {
    let f = std::fs::File::create(vm_dir.join("lock")).unwrap();
    // SAFETY: flock on a descriptor this function owns.
    let locked = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(locked, 0);
    f
}

#[test]
fn built_image_boots_with_cloud_init_and_vessel_ssh_and_cp_work() {
    if tcg::guest().is_none() {
        return;
    }
    for (tool, package) in [
        ("mmdebstrap", "mmdebstrap"),
        ("ssh", "openssh-client"),
        ("scp", "openssh-client"),
    ] {
        tcg::require_tool(tool, package);
    }
    let home = out_dir().join("image-ssh");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let start = Instant::now();
    ok(&home, &["image", "build", "deb"]);
    let built = start.elapsed();
    ok(
        &home,
        &["create", "web", "--image", "deb", "--memory", "1G"],
    );
    let vm_dir = home.join("state/web");
    let def: toml::Table = std::fs::read_to_string(vm_dir.join("vm.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let boot = &def["boot"];
    let nic = &def["nic"].as_array().unwrap()[0];
    let mac = nic["mac"].as_str().unwrap();
    // The host port is chosen at `vessel start`; QEMU stands in for the VMM here, so the
    // test chooses it and records it in the VM's runtime state as `vessel start` does.
    assert_eq!(nic["forward"][0].as_str(), Some("tcp:127.0.0.1:auto-:22"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(vm_dir.join("ports"), format!("tcp:127.0.0.1:{port}-:22\n")).unwrap();

    let _lock = hold_lock(&vm_dir);
    let mut root =
        Served::blk_overlay(&home.join("root.sock"), &vm_dir.join("disk.qcow2"), "qcow2");
    let mut seed = Served::blk(
        &home.join("seed.sock"),
        &vm_dir.join("seed.img"),
        "raw",
        true,
    );
    let mut nat = Served::nat(&home.join("net.sock"), mac, Some((port, 22)));
    let serial = vm_dir.join("serial.log");
    let mem = "memory-backend-memfd,id=mem,size=1024M,share=on";
    let mut qemu = tcg::die_with_test(&mut Command::new(tcg::QEMU))
        .args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-object",
            mem,
            "-numa",
            "node,memdev=mem",
        ])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-device", "virtio-rng-pci"])
        .args(&root.qemu_args)
        .args(&seed.qemu_args)
        .args(&nat.qemu_args)
        .arg("-kernel")
        .arg(boot["kernel"].as_str().unwrap())
        .arg("-initrd")
        .arg(boot["initrd"].as_str().unwrap())
        .args(["-append", boot["cmdline"].as_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    let booted = Instant::now();
    let release = ok(
        &home,
        &[
            "ssh",
            "web",
            "--timeout",
            SSH_TIMEOUT,
            "--",
            "cat",
            "/etc/os-release",
        ],
    );
    let to_ssh = booted.elapsed();
    assert!(release.contains("Debian GNU/Linux 12"), "{release}");
    // The host keys came from the console and are the only ones trusted.
    let known = std::fs::read_to_string(vm_dir.join("known_hosts")).unwrap();
    assert!(
        known.starts_with(&format!("[127.0.0.1]:{port} ")),
        "{known}"
    );
    // The remote exit status is vessel's.
    assert_eq!(
        vessel(&home, &["ssh", "web", "--", "exit 7"]).status.code(),
        Some(7)
    );
    // The guest's root is the image's partition and its hostname the VM's name.
    let host = ok(
        &home,
        &["ssh", "web", "--", "hostname; findmnt -no SOURCE /"],
    );
    assert!(host.starts_with("web\n"), "{host}");

    let payload = home.join("payload.bin");
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&payload, &data).unwrap();
    ok(
        &home,
        &["cp", payload.to_str().unwrap(), "web:/tmp/payload.bin"],
    );
    let back = home.join("back.bin");
    ok(
        &home,
        &["cp", "web:/tmp/payload.bin", back.to_str().unwrap()],
    );
    assert_eq!(tcg::sha256_file(&back), tcg::sha256_file(&payload));
    let guest_sum = ok(&home, &["ssh", "web", "--", "sha256sum /tmp/payload.bin"]);
    assert!(
        guest_sum.starts_with(&tcg::sha256_file(&payload)),
        "{guest_sum}"
    );

    let _ = vessel(&home, &["ssh", "web", "--", "sudo poweroff"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while qemu.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = qemu.kill();
    eprintln!(
        "image build {:.1} s, TCG boot to first vessel ssh {:.1} s",
        built.as_secs_f64(),
        to_ssh.as_secs_f64()
    );
    for served in [&mut root, &mut seed, &mut nat] {
        served.stop();
    }
}
