//! Managing background VMs end to end on KVM: definition files, create/start/ls/console/
//! stop/rm, crash detection, locking, and 20 VMs at once. Each test has its own state dir.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::api::curl;
use common::{multiboot_guest, out_dir, vessel, TIMEOUT};

fn service_guest() -> PathBuf {
    multiboot_guest(
        "service",
        &["multiboot_header.S", "service_guest.c"],
        "multiboot.ld",
    )
}

use common::state_dir::TestState as State;

impl State {
    fn ls(&self) -> Vec<serde_json::Value> {
        serde_json::from_str::<Vec<serde_json::Value>>(&self.ok(&["ls", "--json"])).unwrap()
    }

    fn state_of(&self, name: &str) -> String {
        self.ls()
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| v["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    }

    fn serial(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.join(name).join("serial.log")).unwrap_or_default()
    }

    fn wait_serial(&self, name: &str, text: &str) {
        let start = Instant::now();
        while !self.serial(name).contains(text) {
            assert!(
                start.elapsed() < TIMEOUT,
                "{name}: no {text:?} in serial log: {}",
                self.serial(name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn definition(dir: &Path, name: &str, kernel: &Path) -> PathBuf {
    definition_with(dir, name, kernel, "service")
}

fn definition_with(dir: &Path, name: &str, kernel: &Path, cmdline: &str) -> PathBuf {
    let file = dir.join(format!("{name}.vm.toml"));
    std::fs::write(
        &file,
        format!("name = \"{name}\"\ncpus = 1\nmemory = \"32M\"\n\n[boot]\nkernel = {kernel:?}\ncmdline = {cmdline:?}\n"),
    )
    .unwrap();
    file
}

#[test]
fn validate_reports_errors_with_line_numbers() {
    let dir = out_dir();
    let good = definition(&dir, "valid", &service_guest());
    let r = vessel(&["validate", good.to_str().unwrap()], TIMEOUT);
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains(": ok"));
    let bad = dir.join("bad.vm.toml");
    std::fs::write(
        &bad,
        "name = \"bad name\"\ncpus = 0\nmemory = \"lots\"\n[boot]\nkernel = \"k\"\ncolour = 1\n",
    )
    .unwrap();
    let r = vessel(&["validate", bad.to_str().unwrap()], TIMEOUT);
    assert_eq!(r.status, Some(2));
    assert!(
        r.stderr.contains("bad.vm.toml:6:1: unknown field `colour`"),
        "{}",
        r.stderr
    );
    std::fs::write(
        &bad,
        "name = \"bad name\"\ncpus = 0\nmemory = \"lots\"\n[boot]\nkernel = \"k\"\n",
    )
    .unwrap();
    let r = vessel(&["validate", bad.to_str().unwrap()], TIMEOUT);
    assert_eq!(r.status, Some(2));
    for want in [
        "bad.vm.toml:1:8: invalid VM name",
        "bad.vm.toml:2:8: cpus must be between 1 and 254",
        "bad.vm.toml:3:10: invalid size 'lots'",
    ] {
        assert!(r.stderr.contains(want), "want {want:?} in {}", r.stderr);
    }
}

#[test]
fn lifecycle_create_start_console_stop_rm() {
    let st = State::new("lifecycle");
    let file = definition(&out_dir(), "web", &service_guest());
    st.ok(&["create", "web", "--from", file.to_str().unwrap()]);
    assert_eq!(st.state_of("web"), "stopped");
    let r = st.vessel(&["create", "web", "--from", file.to_str().unwrap()]);
    assert_ne!(r.status, Some(0));
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);

    assert!(st.ok(&["start", "web"]).contains("started VM 'web'"));
    st.wait_serial("web", "service up\n");
    assert_eq!(st.state_of("web"), "running");
    let table = st.ok(&["ls"]);
    assert!(
        table.contains("web") && table.contains("running") && table.contains("32M"),
        "{table}"
    );
    let r = st.vessel(&["start", "web"]);
    assert_ne!(r.status, Some(0));
    assert!(r.stderr.contains("already running"), "{}", r.stderr);

    // Console: input reaches the guest, its output comes back; Ctrl-] detaches.
    let mut child = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(["--state-dir", st.0.to_str().unwrap(), "console", "web"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"hello vessel\r").unwrap();
    st.wait_serial("web", "echo: hello vessel\n");
    std::thread::sleep(Duration::from_millis(200));
    stdin.write_all(&[0x1d]).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("echo: hello vessel"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&st.ok(&["inspect", "web", "--json"])).unwrap();
    assert_eq!(inspect["state"], "running");
    assert!(inspect["pid"].as_i64().unwrap() > 0);

    // Graceful stop: the guest (listening to both) powers off on the first it sees.
    let out = st.ok(&["stop", "web", "--timeout", "20"]);
    assert!(out.contains("shut down (guest powered off)"), "{out}");
    assert!(st.serial("web").contains(": powering off"));
    assert_eq!(st.state_of("web"), "stopped");
    assert!(st.ok(&["stop", "web"]).contains("is not running"));
    assert!(st.ok(&["rm", "web"]).contains("removed VM 'web'"));
    assert!(st.ls().is_empty());
}

#[test]
fn a_killed_vmm_shows_as_crashed_with_its_last_serial_lines() {
    let st = State::new("crash");
    let file = definition(&out_dir(), "victim", &service_guest());
    st.ok(&["create", "victim", "--from", file.to_str().unwrap()]);
    st.ok(&["start", "victim"]);
    st.wait_serial("victim", "service up\n");
    let inspect: serde_json::Value =
        serde_json::from_str(&st.ok(&["inspect", "victim", "--json"])).unwrap();
    let pid = inspect["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; this kills the
    // VMM this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let start = Instant::now();
    while st.state_of("victim") != "crashed" {
        assert!(start.elapsed() < TIMEOUT, "never shown as crashed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&st.ok(&["inspect", "victim", "--json"])).unwrap();
    assert!(
        inspect["last_serial_lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "service up"),
        "{inspect}"
    );
    // A crashed VM starts again.
    st.ok(&["start", "victim"]);
    assert_eq!(st.state_of("victim"), "running");
    st.ok(&["stop", "victim", "--force"]);
    assert_eq!(st.state_of("victim"), "stopped");
}

#[test]
fn twenty_vms_start_list_and_stop() {
    let st = State::new("twenty");
    let kernel = service_guest();
    let names: Vec<String> = (0..20).map(|i| format!("vm{i:02}")).collect();
    for n in &names {
        let file = definition(&out_dir(), n, &kernel);
        st.ok(&["create", n, "--from", file.to_str().unwrap()]);
    }
    let root = st.0.clone();
    let starts: Vec<_> = names
        .iter()
        .map(|n| {
            let (root, n) = (root.clone(), n.clone());
            std::thread::spawn(move || {
                vessel(
                    &["--state-dir", root.to_str().unwrap(), "start", &n],
                    TIMEOUT,
                )
            })
        })
        .collect();
    for s in starts {
        let r = s.join().unwrap();
        assert_eq!(r.status, Some(0), "{}", r.stderr);
    }
    for n in &names {
        st.wait_serial(n, "service up\n");
    }
    let ls = st.ls();
    assert_eq!(ls.len(), 20);
    assert!(ls.iter().all(|v| v["state"] == "running"), "{ls:?}");
    let stops: Vec<_> = names
        .iter()
        .map(|n| {
            let (root, n) = (root.clone(), n.clone());
            std::thread::spawn(move || {
                vessel(
                    &[
                        "--state-dir",
                        root.to_str().unwrap(),
                        "stop",
                        &n,
                        "--timeout",
                        "30",
                    ],
                    Duration::from_secs(60),
                )
            })
        })
        .collect();
    for s in stops {
        let r = s.join().unwrap();
        assert_eq!(r.status, Some(0), "{}", r.stderr);
    }
    assert!(st.ls().iter().all(|v| v["state"] == "stopped"));
}

#[test]
fn stop_asks_through_the_acpi_power_button_and_through_ctrl_alt_del() {
    let st = State::new("buttons");
    for (name, listen, says) in [
        ("acpi", "listen=acpi", "power button: powering off"),
        ("kbd", "listen=kbd", "ctrl-alt-del: powering off"),
    ] {
        let file = definition_with(&out_dir(), name, &service_guest(), listen);
        st.ok(&["create", name, "--from", file.to_str().unwrap()]);
        st.ok(&["start", name]);
        st.wait_serial(name, "service up\n");
        let out = st.ok(&["stop", name, "--timeout", "20"]);
        assert!(out.contains("shut down (guest powered off)"), "{out}");
        assert!(st.serial(name).contains(says), "{}", st.serial(name));
    }
}

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A VM with a 64 MiB qcow2 disk holding data at 1 MiB (the rest sparse).
fn vm_with_disk(st: &State, name: &str) -> PathBuf {
    let file = definition(&out_dir(), name, &service_guest());
    let mut text = std::fs::read_to_string(&file).unwrap();
    text += &format!(
        "\n[[disk]]\npath = {:?}\nformat = \"qcow2\"\nsize = \"64M\"\n",
        st.0.join(format!("{name}-data.qcow2"))
    );
    std::fs::write(&file, text).unwrap();
    st.ok(&["create", name, "--from", file.to_str().unwrap()]);
    let disk = st.0.join(format!("{name}-data.qcow2"));
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x5a 1M 256k"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(out.status.success());
    disk
}

#[test]
fn export_import_round_trip_keeps_disks_and_boots() {
    let st = State::new("export");
    let disk = vm_with_disk(&st, "orig");
    let archive = out_dir().join("orig.vessel.tar");
    let _ = std::fs::remove_file(&archive);
    st.ok(&["export", "orig", archive.to_str().unwrap()]);
    // Sparse: the archive holds the data, not the 64 MiB of virtual size.
    assert!(std::fs::metadata(&archive).unwrap().len() < 8 << 20);
    st.ok(&["import", archive.to_str().unwrap(), "--name", "copy"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&st.ok(&["inspect", "copy", "--json"])).unwrap();
    let copied = PathBuf::from(inspect["definition"]["disk"][0]["path"].as_str().unwrap());
    assert!(copied.starts_with(st.0.join("copy")), "{copied:?}");
    qemu_img(&["compare", disk.to_str().unwrap(), copied.to_str().unwrap()]);
    let r = st.vessel(&["import", archive.to_str().unwrap(), "--name", "copy"]);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    st.ok(&["start", "copy"]);
    st.wait_serial("copy", "service up\n");
    st.ok(&["stop", "copy"]);
}

#[test]
fn linked_clone_is_an_overlay_and_full_clone_is_a_copy() {
    let st = State::new("clone");
    let disk = vm_with_disk(&st, "base");
    st.ok(&["clone", "base", "linked", "--linked"]);
    st.ok(&["clone", "base", "full"]);
    let linked: serde_json::Value =
        serde_json::from_str(&st.ok(&["inspect", "linked", "--json"])).unwrap();
    let overlay = linked["definition"]["disk"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let info = qemu_img(&["info", "--output=json", &overlay]);
    assert!(
        info.contains(&format!("\"backing-filename\": \"{}\"", disk.display())),
        "{info}"
    );
    qemu_img(&["compare", disk.to_str().unwrap(), &overlay]);
    // Writing the overlay leaves the base untouched.
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x11 1M 4k", &overlay])
        .output()
        .unwrap();
    assert!(out.status.success());
    let base_read = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "read -P 0x5a 1M 256k"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&base_read.stdout).contains("read 262144/262144"),
        "{}",
        String::from_utf8_lossy(&base_read.stdout)
    );
    let full: serde_json::Value =
        serde_json::from_str(&st.ok(&["inspect", "full", "--json"])).unwrap();
    let copy = full["definition"]["disk"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!qemu_img(&["info", &copy]).contains("backing file"));
    qemu_img(&["compare", disk.to_str().unwrap(), &copy]);
    st.ok(&["start", "linked"]);
    st.wait_serial("linked", "service up\n");
    let r = st.vessel(&["clone", "linked", "again"]);
    assert!(r.stderr.contains("is running"), "{}", r.stderr);
    st.ok(&["stop", "linked", "--force"]);
}

#[test]
fn a_background_vm_serves_the_rest_api_on_its_socket() {
    let st = State::new("api");
    let file = definition_with(&out_dir(), "svc", &service_guest(), "listen=kbd");
    st.ok(&["create", "svc", "--from", file.to_str().unwrap()]);
    st.ok(&["start", "svc"]);
    st.wait_serial("svc", "service up\n");
    let sock = st.0.join("svc").join("api.sock");
    let (code, body) = curl(&sock, "GET", "/", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"state\":\"Running\""), "{body}");
    let (code, config) = curl(&sock, "GET", "/vm/config", None);
    assert_eq!(code, 200);
    assert!(
        config.contains("\"mem_size_mib\":32") && config.contains("\"boot_args\":\"listen=kbd\""),
        "{config}"
    );
    let (code, body) = curl(
        &sock,
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count": 2, "mem_size_mib": 64}"#),
    );
    assert_eq!(code, 400);
    assert!(body.contains("after starting"), "{body}");
    assert_eq!(
        curl(&sock, "PATCH", "/vm", Some(r#"{"state": "Paused"}"#)).0,
        204
    );
    assert!(curl(&sock, "GET", "/", None)
        .1
        .contains("\"state\":\"Paused\""));
    assert_eq!(
        curl(&sock, "PATCH", "/vm", Some(r#"{"state": "Resumed"}"#)).0,
        204
    );
    assert_eq!(
        curl(
            &sock,
            "PUT",
            "/actions",
            Some(r#"{"action_type": "SendCtrlAltDel"}"#)
        )
        .0,
        204
    );
    let start = Instant::now();
    while st.state_of("svc") != "stopped" {
        assert!(
            start.elapsed() < TIMEOUT,
            "the guest did not stop after SendCtrlAltDel"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(st.serial("svc").contains("ctrl-alt-del: powering off"));
    assert!(!sock.exists(), "the API socket is removed when the VM ends");
}

#[test]
fn ssh_uses_the_forwarded_port_of_the_vm() {
    let st = State::new("ssh");
    let file = out_dir().join("sshvm.vm.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"sshvm\"\nmemory = \"32M\"\n[boot]\nkernel = {:?}\n[[nic]]\nmode = \"nat\"\nforward = [\"tcp:127.0.0.1:2299-:22\", \"tcp:127.0.0.1:8080-:80\"]\n",
            service_guest()
        ),
    )
    .unwrap();
    st.ok(&["create", "sshvm", "--from", file.to_str().unwrap()]);
    assert!(st
        .ok(&["ls"])
        .contains("127.0.0.1:2299->22/tcp,127.0.0.1:8080->80/tcp"));
    // A stopped VM has no sshd to wait for. (tests/image_ssh.rs runs OpenSSH for real.)
    let r = st.vessel(&["ssh", "sshvm", "--user", "dev", "--", "uname", "-a"]);
    assert_ne!(r.status, Some(0));
    assert!(
        r.stderr.contains("VM 'sshvm' is not running"),
        "{}",
        r.stderr
    );
    // Without a forward to port 22 there is nothing to connect to.
    let plain = definition(&out_dir(), "nossh", &service_guest());
    st.ok(&["create", "nossh", "--from", plain.to_str().unwrap()]);
    let r = st.vessel(&["ssh", "nossh"]);
    assert_ne!(r.status, Some(0));
    assert!(
        r.stderr
            .contains("forwards no host port to its SSH port 22"),
        "{}",
        r.stderr
    );
}

#[test]
fn import_refuses_archives_that_point_outside_themselves() {
    let st = State::new("evil-import");
    let dir = out_dir().join("evil-archive");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("boot")).unwrap();
    std::fs::copy(service_guest(), dir.join("boot/kernel")).unwrap();
    let victim = out_dir().join("evil-victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    for (case, disk) in [
        ("absolute", victim.display().to_string()),
        ("dotdot", "../../evil-victim.txt".to_string()),
    ] {
        std::fs::write(
            dir.join("vm.toml"),
            format!("name = \"evil\"\nmemory = \"32M\"\n[boot]\nkernel = \"boot/kernel\"\n[[disk]]\npath = {disk:?}\nformat = \"raw\"\n"),
        )
        .unwrap();
        let archive = out_dir().join(format!("evil-{case}.tar"));
        let status = Command::new("tar")
            .args(["-cf"])
            .arg(&archive)
            .arg("-C")
            .arg(&dir)
            .args(["vm.toml", "boot"])
            .status()
            .unwrap();
        assert!(status.success());
        let r = st.vessel(&["import", archive.to_str().unwrap()]);
        assert_ne!(r.status, Some(0), "{case}: {}", r.stdout);
        assert!(
            r.stderr.contains("not a file inside the archive"),
            "{case}: {}",
            r.stderr
        );
        assert!(st.ls().is_empty());
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // A disk inside the archive whose qcow2 backing file is a host file.
    std::fs::create_dir_all(dir.join("disks")).unwrap();
    let overlay = dir.join("disks/overlay.qcow2");
    let _ = std::fs::remove_file(&overlay);
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        victim.to_str().unwrap(),
        overlay.to_str().unwrap(),
    ]);
    std::fs::write(
        dir.join("vm.toml"),
        "name = \"evil\"\nmemory = \"32M\"\n[boot]\nkernel = \"boot/kernel\"\n[[disk]]\npath = \"disks/overlay.qcow2\"\n",
    )
    .unwrap();
    let archive = out_dir().join("evil-backing.tar");
    let status = Command::new("tar")
        .args(["-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(&dir)
        .args(["vm.toml", "boot", "disks"])
        .status()
        .unwrap();
    assert!(status.success());
    let r = st.vessel(&["import", archive.to_str().unwrap()]);
    assert_ne!(r.status, Some(0));
    assert!(
        r.stderr.contains("backing file") && r.stderr.contains("is an absolute path"),
        "{}",
        r.stderr
    );
    assert!(st.ls().is_empty());
    // A VMDK descriptor in the archive whose writable FLAT extent leaves it.
    std::fs::remove_file(&overlay).unwrap();
    std::fs::write(
        dir.join("disks/evil.vmdk"),
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 16 FLAT \"../../evil-victim.txt\" 0\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("vm.toml"),
        "name = \"evil\"\nmemory = \"32M\"\n[boot]\nkernel = \"boot/kernel\"\n[[disk]]\npath = \"disks/evil.vmdk\"\n",
    )
    .unwrap();
    let archive = out_dir().join("evil-extent.tar");
    let status = Command::new("tar")
        .args(["-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(&dir)
        .args(["vm.toml", "boot", "disks"])
        .status()
        .unwrap();
    assert!(status.success());
    let r = st.vessel(&["import", archive.to_str().unwrap()]);
    assert_ne!(r.status, Some(0));
    assert!(
        r.stderr
            .contains("extent '../../evil-victim.txt' leaves the image's directory"),
        "{}",
        r.stderr
    );
    assert!(st.ls().is_empty());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn create_records_the_detected_disk_format() {
    let st = State::new("record-format");
    let disk = st.0.join("guest.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let file = definition(&out_dir(), "fmt", &service_guest());
    let mut text = std::fs::read_to_string(&file).unwrap();
    text += &format!("\n[[disk]]\npath = {disk:?}\n");
    std::fs::write(&file, text).unwrap();
    st.ok(&["create", "fmt", "--from", file.to_str().unwrap()]);
    let stored = std::fs::read_to_string(st.0.join("fmt").join("vm.toml")).unwrap();
    assert!(stored.contains("format = \"raw\""), "{stored}");
    // What a guest writes later cannot change that: a qcow2 header naming a host file.
    let mut bytes = std::fs::read(&disk).unwrap();
    bytes[..4].copy_from_slice(b"QFI\xfb");
    std::fs::write(&disk, bytes).unwrap();
    let inspect: serde_json::Value =
        serde_json::from_str(&st.ok(&["inspect", "fmt", "--json"])).unwrap();
    assert_eq!(
        inspect["definition"]["disk"][0]["format"], "raw",
        "{inspect}"
    );
}

#[test]
fn json_of_create_start_stop_clone_and_the_human_inspect() {
    let st = State::new("json");
    let file = definition(&out_dir(), "jvm", &service_guest());
    let json = |args: &[&str]| -> serde_json::Value {
        let out = st.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    let created = json(&["create", "jvm", "--from", file.to_str().unwrap(), "--json"]);
    assert_eq!(created["state"], "stopped");
    assert_eq!(created["memory_mib"], 32);
    assert_eq!(created["ports"], serde_json::json!([]));
    let started = json(&["start", "jvm", "--json"]);
    assert_eq!(started["state"], "running");
    assert!(started["pid"].as_i64().unwrap() > 0);
    st.wait_serial("jvm", "service up\n");
    let r = st.vessel(&["set", "jvm", "--cpus", "2"]);
    assert_eq!(r.status, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "is running: only --forward and --remove-forward change a running VM; stop it first"
        ),
        "{}",
        r.stderr
    );
    // inspect speaks to people unless asked for JSON.
    let page = st.ok(&["inspect", "jvm"]);
    assert!(page.contains("State:      running (pid "), "{page}");
    assert!(page.contains("Memory:     32 MiB"), "{page}");
    assert!(serde_json::from_str::<serde_json::Value>(&page).is_err());
    let stopped = json(&["stop", "jvm", "--timeout", "20", "--json"]);
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["pid"], serde_json::Value::Null);
    let cloned = json(&["clone", "jvm", "jvm2", "--json"]);
    assert_eq!(
        (cloned["name"].as_str(), cloned["state"].as_str()),
        (Some("jvm2"), Some("stopped"))
    );
}

/// `vessel set NAME --forward` on a running nat VM: the CLI binds the host port and hands
/// the listening socket to the confined VMM, whose I/O thread accepts on it (its seccomp
/// role allows that); inspect lists the forward live, vm.toml keeps it, and
/// `--remove-forward` closes the port again. The service guest runs no TCP stack, so the
/// relay's connection to it never completes: what is checked is the host side.
/// (tests/nested/mmds.rs carries data through such a forward to a real Linux guest.)
#[test]
fn set_adds_and_removes_a_forward_of_a_running_nat_vm() {
    let st = State::new("live-forward");
    let file = out_dir().join("fwdvm.vm.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"fwdvm\"\nmemory = \"32M\"\n[boot]\nkernel = {:?}\ncmdline = \"service\"\n[[nic]]\nmode = \"nat\"\n",
            service_guest()
        ),
    )
    .unwrap();
    st.ok(&["create", "fwdvm", "--from", file.to_str().unwrap()]);
    st.ok(&["start", "fwdvm"]);
    st.wait_serial("fwdvm", "service up\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = format!("tcp:127.0.0.1:{port}-:8000");
    let out = st.ok(&["set", "fwdvm", "--forward", &spec]);
    assert!(out.contains("forwarding"), "{out}");
    let inspect: serde_json::Value =
        serde_json::from_str(&st.ok(&["inspect", "fwdvm", "--json"])).unwrap();
    let live = inspect["live_forwards"].to_string();
    assert!(live.contains(&port.to_string()), "{inspect}");
    let toml = std::fs::read_to_string(st.0.join("fwdvm/vm.toml")).unwrap();
    assert!(toml.contains(&format!("{port}-:8000")), "{toml}");
    // The VMM accepts the client and lives on.
    let client = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(client.is_ok(), "{client:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(st.state_of("fwdvm"), "running", "{}", st.serial("fwdvm"));
    drop(client);
    st.ok(&["set", "fwdvm", "--remove-forward", &port.to_string()]);
    let inspect: serde_json::Value =
        serde_json::from_str(&st.ok(&["inspect", "fwdvm", "--json"])).unwrap();
    assert!(
        !inspect["live_forwards"]
            .to_string()
            .contains(&port.to_string()),
        "{inspect}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port is closed again"
    );
    let toml = std::fs::read_to_string(st.0.join("fwdvm/vm.toml")).unwrap();
    assert!(!toml.contains(&format!("{port}-:8000")), "{toml}");
    assert_eq!(st.state_of("fwdvm"), "running");
    st.ok(&["stop", "fwdvm", "--timeout", "20"]);
}
