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

    provisioners_and_ansible_inventory_work(&home, &vm_dir, port);
    vagrant_reaches_the_vm_through_the_plugin(&home, port);

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

/// `[[provision]]` shell/script/file/ansible entries run by `vessel provision` (a failure
/// stops the run with its status, `--only` re-runs one), and `vessel inventory` drives
/// ansible-playbook through scripts/vessel-inventory (facts gathered, a file copied, a
/// command run).
fn provisioners_and_ansible_inventory_work(home: &Path, vm_dir: &Path, port: u16) {
    tcg::require_tool("ansible-playbook", "ansible-core");
    let project = home.join("project");
    std::fs::create_dir_all(project.join("site")).unwrap();
    std::fs::write(
        project.join("setup.sh"),
        "#!/bin/sh\necho \"setup says $1\"\necho by-script > /etc/vessel-marker\n",
    )
    .unwrap();
    std::fs::write(project.join("site/index.html"), "hello from the host\n").unwrap();
    std::fs::write(
        project.join("site.yml"),
        "- hosts: all\n  become: true\n  tasks:\n    - copy:\n        content: \"{{ ansible_facts['distribution'] }} {{ port }}\\n\"\n        dest: /etc/vessel-facts\n    - command: cat /etc/vessel-facts\n      register: facts\n    - debug:\n        var: facts.stdout\n",
    )
    .unwrap();
    let file = vm_dir.join("vm.toml");
    let mut def: toml::Table = std::fs::read_to_string(&file).unwrap().parse().unwrap();
    let p = |s: &str| project.join(s).display().to_string();
    let provision: toml::Value = toml::from_str::<toml::Table>(&format!(
        "[[provision]]\nshell = \"echo inline as $(id -un)\"\n[[provision]]\nscript = {:?}\nargs = [\"one two\"]\n[[provision]]\nfile = {{ source = {:?}, destination = \"/tmp/site\" }}\n[[provision]]\nname = \"site\"\nansible = {{ playbook = {:?}, extra_vars = {{ port = 8080 }} }}\n[[provision]]\nname = \"fails\"\nshell = \"echo about to fail; exit 5\"\n",
        p("setup.sh"),
        p("site"),
        p("site.yml")
    ))
    .unwrap()["provision"]
        .clone();
    def.insert("provision".into(), provision);
    def.insert(
        "groups".into(),
        toml::Value::Array(vec!["webservers".into()]),
    );
    std::fs::write(&file, toml::to_string(&def).unwrap()).unwrap();

    let started = Instant::now();
    let out = vessel(home, &["provision", "web"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("==> web: running provisioner shell-1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("    web/shell-1: inline as root"),
        "{stdout}"
    );
    assert!(
        stdout.contains("    web/shell-2: setup says one two"),
        "{stdout}"
    );
    assert!(stdout.contains("    web/fails: about to fail"), "{stdout}");
    let done = std::fs::read_to_string(vm_dir.join("provisioned")).unwrap();
    assert_eq!(done, "shell-1\nshell-2\nfile-3\nsite\n");
    let seen = ok(
        home,
        &[
            "ssh",
            "web",
            "--",
            "cat /etc/vessel-marker /tmp/site/index.html /etc/vessel-facts",
        ],
    );
    assert_eq!(seen, "by-script\nhello from the host\nDebian 8080\n");
    // --only runs one, whether it ran before or not; an unknown name is a usage error.
    let again = ok(home, &["provision", "web", "--only", "site"]);
    assert!(again.contains("running provisioner site"), "{again}");
    assert!(!again.contains("shell-1"), "{again}");
    assert_eq!(
        vessel(home, &["provision", "web", "--only", "nope"])
            .status
            .code(),
        Some(2)
    );
    let provisioned = started.elapsed();

    // The dynamic inventory: the VM in its group, with vessel's key and known_hosts.
    let inv: serde_json::Value = serde_json::from_str(&ok(home, &["inventory", "--list"])).unwrap();
    assert_eq!(inv["webservers"]["hosts"], serde_json::json!(["web"]));
    assert_eq!(inv["_meta"]["hostvars"]["web"]["ansible_port"], port);
    let play = project.join("uname.yml");
    std::fs::write(
        &play,
        "- hosts: webservers\n  tasks:\n    - command: uname -s\n      register: u\n    - assert:\n        that: u.stdout == 'Linux'\n",
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/vessel-inventory");
    let out = Command::new("ansible-playbook")
        .arg("-i")
        .arg(&script)
        .arg(&play)
        .env("VESSEL", env!("CARGO_BIN_EXE_vessel"))
        .env("VESSEL_STATE_DIR", home.join("state"))
        .env("XDG_DATA_HOME", home)
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("web") && text.contains("failed=0"), "{text}");
    eprintln!(
        "provisioners (shell, script, file, ansible, failing) and --only: {:.1} s",
        provisioned.as_secs_f64()
    );
}

/// Vagrant with the vagrant-vessel plugin on a machine whose vessel VM is `web`: ssh-config,
/// `vagrant ssh -c`, Vagrant's own shell provisioner and its rsync synced folder reach the
/// guest through vessel's ssh path (`vessel ssh-config`). The lifecycle (box add, up, halt, destroy) runs on vessel
/// in tests/vagrant.rs.
fn vagrant_reaches_the_vm_through_the_plugin(home: &Path, port: u16) {
    tcg::require_tool("vagrant", "vagrant");
    let config = ok(home, &["ssh-config", "web"]);
    assert!(config.contains(&format!("Port {port}")), "{config}");
    assert!(config.contains("StrictHostKeyChecking yes"), "{config}");
    let p = common::vagrant::Project::new(
        &home.join("vagrant"),
        &home.join("state"),
        home,
        "  config.vm.box = \"tiny\"\n  config.vm.synced_folder \".\", \"/vagrant\", type: \"rsync\", rsync__exclude: \".vagrant/\"\n  config.vm.provision \"shell\", inline: \"echo from-vagrant > /tmp/vagrant-marker\"\n  config.vm.provider :vessel do |v|\n    v.state_dir = \"STATE\"\n  end\n",
    );
    let id_dir = p.dir.join(".vagrant/machines/default/vessel");
    std::fs::create_dir_all(&id_dir).unwrap();
    std::fs::write(id_dir.join("id"), "web").unwrap();
    assert!(p.ok(&["status"]).contains("running (vessel)"));
    let cfg = p.ok(&["ssh-config"]);
    assert!(
        cfg.contains(&format!("Port {port}")) && cfg.contains("User debian"),
        "{cfg}"
    );
    assert_eq!(p.ok(&["ssh", "-c", "uname -s"]).trim(), "Linux");
    p.ok(&["provision"]);
    assert_eq!(
        ok(home, &["ssh", "web", "--", "cat /tmp/vagrant-marker"]),
        "from-vagrant\n"
    );
    // Vagrant's rsync synced folder, over the same ssh path (rsync is in vessel's image).
    // `vagrant rsync` syncs the folders `vagrant up` recorded when it booted the machine;
    // this test adopted a running machine instead, so it records them as `up` does.
    let synced = serde_json::json!({"rsync": {"/vagrant": {
        "guestpath": "/vagrant",
        "hostpath": p.dir.display().to_string(),
        "type": "rsync",
        "exclude": [".vagrant/"],
    }}});
    std::fs::write(id_dir.join("synced_folders"), synced.to_string()).unwrap();
    std::fs::write(p.dir.join("synced.txt"), "synced by vagrant rsync\n").unwrap();
    let out = p.ok(&["rsync"]);
    assert!(out.contains("Rsyncing folder"), "{out}");
    assert_eq!(
        ok(home, &["ssh", "web", "--", "cat /vagrant/synced.txt"]),
        "synced by vagrant rsync\n"
    );
}
