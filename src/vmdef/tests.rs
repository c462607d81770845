//! Parsing and checking of VM definitions.

use super::*;

const GOOD: &str = r#"
name = "dev"
cpus = 2
memory = "1G"

[boot]
kernel = "bzImage"
initrd = "initramfs.cpio.gz"

[[disk]]
path = "disk.qcow2"
format = "qcow2"
size = "8G"

[[nic]]
mode = "nat"
forward = ["tcp:127.0.0.1:2222-:22"]
"#;

#[test]
fn parses_a_full_definition() {
    let mut d = VmDefinition::parse(Path::new("vm.toml"), GOOD).unwrap();
    assert_eq!(d.name.get_ref(), "dev");
    assert_eq!(d.memory_bytes(), 1 << 30);
    d.resolve_paths(Path::new("/vms"));
    assert_eq!(d.boot.kernel.get_ref(), Path::new("/vms/bzImage"));
    assert_eq!(d.forwards()[0].to_string(), "tcp:127.0.0.1:2222-:22");
    assert_eq!(d.boot.cmdline, default_cmdline());
}

#[test]
fn vsock_section() {
    let text = format!("{GOOD}\n[vsock]\ncid = 5\nuds = \"v.sock\"\n");
    let mut d = VmDefinition::parse(Path::new("vm.toml"), &text).unwrap();
    d.resolve_paths(Path::new("/vms"));
    let cfg = d.vm_config(vmm::SerialMode::None).unwrap();
    assert_eq!(
        cfg.machine.vsock,
        Some(vmm::VsockConfig {
            cid: 5,
            uds: "/vms/v.sock".into()
        })
    );
    for (bad, line, what) in [
        ("cid = 2\nuds = \"v\"", 20, "guest CID 2"),
        ("cid = -1\nuds = \"v\"", 20, "guest CID -1"),
        ("cid = 3\nuds = \"\"", 21, "empty"),
        ("cid = 3", 19, "missing field `uds`"),
        ("cid = 3\nuds = \"v\"\nport = 1", 22, "unknown field"),
    ] {
        let text = format!("{GOOD}\n[vsock]\n{bad}\n");
        let e = VmDefinition::parse(Path::new("vm.toml"), &text).unwrap_err();
        assert_eq!(e.errors[0].line, line, "{bad}: {e}");
        assert!(e.errors[0].message.contains(what), "{bad}: {e}");
    }
}

#[test]
fn errors_point_at_the_line() {
    let text = GOOD
        .replace("cpus = 2", "cpus = 0")
        .replace("format = \"qcow2\"", "format = \"floppy\"");
    let e = VmDefinition::parse(Path::new("vm.toml"), &text).unwrap_err();
    let lines: Vec<usize> = e.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3, 12]);
    assert!(
        e.to_string()
            .contains("vm.toml:3:8: cpus must be between 1 and 254"),
        "{e}"
    );
    let log = format!("{GOOD}\n[serial]\nlog = \"/tmp/x\"\n");
    let e = VmDefinition::parse(Path::new("vm.toml"), &log).unwrap_err();
    assert!(
        e.to_string()
            .contains("vm.toml:20:7: serial.log is not supported"),
        "{e}"
    );
    let unknown = GOOD.replace("memory = \"1G\"", "memroy = \"1G\"");
    let e = VmDefinition::parse(Path::new("vm.toml"), &unknown).unwrap_err();
    assert_eq!(e.errors[0].line, 4);
    assert!(
        e.errors[0].message.contains("unknown field `memroy`"),
        "{e}"
    );
    let syntax = GOOD.replace("cpus = 2", "cpus = = 2");
    assert_eq!(
        VmDefinition::parse(Path::new("vm.toml"), &syntax)
            .unwrap_err()
            .errors[0]
            .line,
        3
    );
}

#[test]
fn nic_errors_point_at_the_nic() {
    let text = GOOD.replace("mode = \"nat\"", "mode = \"internal:lan\"");
    let e = VmDefinition::parse(Path::new("vm.toml"), &text).unwrap_err();
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(e.errors[0].line, 16, "the mode line");
    assert!(e.errors[0].message.contains("forward="), "{e}");
    let natnet = GOOD.replace("mode = \"nat\"", "mode = \"natnet:lab\"");
    assert!(VmDefinition::parse(Path::new("vm.toml"), &natnet).is_ok());
    let on = GOOD.replace("mode = \"nat\"", "mode = \"nat\"\nhost_loopback = true");
    let d = VmDefinition::parse(Path::new("vm.toml"), &on).unwrap();
    assert_eq!(
        nic_spec(&d.nics[0]),
        "nat,forward=tcp:127.0.0.1:2222-:22,host-loopback=on"
    );
    assert!(d.vm_config(vmm::SerialMode::None).unwrap().machine.nics[0].host_loopback);
    let plain = VmDefinition::parse(Path::new("vm.toml"), GOOD).unwrap();
    assert!(!plain.vm_config(vmm::SerialMode::None).unwrap().machine.nics[0].host_loopback);
    let tap = GOOD
        .replace("mode = \"nat\"", "mode = \"tap:t0\"\nhost_loopback = true")
        .replace("forward = [\"tcp:127.0.0.1:2222-:22\"]", "");
    let e = VmDefinition::parse(Path::new("vm.toml"), &tap).unwrap_err();
    assert!(
        e.to_string()
            .contains("host_loopback is for the nat and natnet modes"),
        "{e}"
    );
    let bad_name = GOOD.replace("mode = \"nat\"", "mode = \"hostonly:a/b\"");
    let e = VmDefinition::parse(Path::new("vm.toml"), &bad_name).unwrap_err();
    assert!(e.errors[0].message.contains("invalid name"), "{e}");
}

#[test]
fn missing_files_are_named_at_their_line() {
    let dir = std::env::temp_dir().join(format!("vmdef-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bzImage"), b"k").unwrap();
    let mut d = VmDefinition::parse(Path::new("vm.toml"), GOOD).unwrap();
    d.resolve_paths(&dir);
    let e = d.check_files(Path::new("vm.toml"), GOOD).unwrap_err();
    // The initrd is missing; the disk has a size, so create makes it.
    assert_eq!(e.errors.len(), 1, "{e}");
    assert!(e.to_string().contains("vm.toml:8:10: initrd "), "{e}");
    let no_size = GOOD.replace("size = \"8G\"\n", "");
    let mut d = VmDefinition::parse(Path::new("vm.toml"), &no_size).unwrap();
    d.resolve_paths(&dir);
    let e = d.check_files(Path::new("vm.toml"), &no_size).unwrap_err();
    assert!(e.to_string().contains("vm.toml:11:8: disk "), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_fields_rng_pit_console2() {
    let text = GOOD.replace(
        "memory = \"1G\"",
        "memory = \"1G\"\nrng = true\npit = \"on\"\nconsole2 = \"c2.log\"",
    );
    let mut d = VmDefinition::parse(Path::new("vm.toml"), &text).unwrap();
    d.resolve_paths(Path::new("/vms"));
    let cfg = d.vm_config(vmm::SerialMode::None).unwrap();
    assert!(cfg.machine.rng);
    assert_eq!(cfg.machine.pit, vmm::PitMode::On);
    assert_eq!(cfg.machine.console2, Some(PathBuf::from("/vms/c2.log")));
    let bad = GOOD.replace("memory = \"1G\"", "memory = \"1G\"\npit = \"maybe\"");
    let e = VmDefinition::parse(Path::new("vm.toml"), &bad).unwrap_err();
    assert!(
        e.to_string().contains("vm.toml:5:7: invalid pit 'maybe'"),
        "{e}"
    );
}

#[test]
fn the_example_parses_with_its_optional_fields_too() {
    let text = include_str!("../../examples/dev.vm.toml");
    VmDefinition::parse(Path::new("dev.vm.toml"), text).unwrap();
    // Uncomment `# key = ...` and `# [table]` lines: every field shown is a real one.
    let all: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| !k.contains(' ')) =>
            {
                rest
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let d = VmDefinition::parse(Path::new("dev.vm.toml"), &all)
        .unwrap_or_else(|e| panic!("{e}\n{all}"));
    assert!(d.rng && d.nics.len() == 1 && d.ssh.user.is_some());
}

#[test]
fn nics_from_nic_flags() {
    let n =
        Nic::from_spec("nat,mac=52:54:00:00:00:01,forward=tcp::80-:80,host-loopback=on").unwrap();
    assert_eq!(
        nic_spec(&n),
        "nat,mac=52:54:00:00:00:01,forward=tcp::80-:80,host-loopback=on"
    );
    assert!(n.is_nat() && !Nic::from_spec("tap:t0").unwrap().is_nat());
    assert!(Nic::from_spec("tap:t0,forward=tcp::1-:2").is_err());
    assert!(Nic::from_spec("nat,forward=tcp:1-:2").is_err());
}

#[test]
fn a_nic_converts_field_by_field_as_its_flag_parses() {
    for spec in [
        "nat,mac=52:54:00:00:00:01,forward=tcp::80-:80,host-loopback=on",
        "natnet:lab,forward=udp:127.0.0.1:5353-:53,rate=10M,rx-rate=1M",
        "tap:t0,tx-rate=2M",
        "internal:lan",
    ] {
        let nic = Nic::from_spec(spec).unwrap();
        assert_eq!(
            nic.to_config(AutoPorts::Refused).unwrap(),
            net::parse_nic(spec).unwrap(),
            "{spec}"
        );
    }
    let auto = Nic::from_spec("nat").map(|mut n| {
        n.forward = vec![Spanned::new(0..0, "tcp:127.0.0.1:auto-:22".into())];
        n
    });
    let auto = auto.unwrap();
    assert!(matches!(
        auto.to_config(AutoPorts::Refused),
        Err(NicError::AutoPort(_))
    ));
    assert_eq!(
        auto.to_config(AutoPorts::Placeholder)
            .unwrap()
            .forwards
            .len(),
        1
    );
    let mut bad = Nic::from_spec("nat").unwrap();
    bad.mac = Some("01:00:00:00:00:01".into());
    assert!(bad
        .to_config(AutoPorts::Refused)
        .unwrap_err()
        .to_string()
        .contains("01:00"));
}

#[test]
fn names_and_forwards() {
    assert!(valid_name("web-1.test_a"));
    assert!(
        !valid_name("-x") && !valid_name("") && !valid_name("a/b") && !valid_name(&"a".repeat(64))
    );
    // One parser for TOML and --nic: what one takes, the other takes.
    for (text, listen) in [
        ("tcp::8080-:80", "127.0.0.1:8080"),
        ("tcp::80-10.0.2.15:80", "127.0.0.1:80"),
        ("tcp:0.0.0.0:2222-:22", "0.0.0.0:2222"),
    ] {
        let toml = GOOD.replace("tcp:127.0.0.1:2222-:22", text);
        let d = VmDefinition::parse(Path::new("vm.toml"), &toml).unwrap();
        let f = d.forwards()[0];
        assert_eq!(format!("{}:{}", f.listen_addr(), f.host_port), listen);
        assert!(net::parse_nic(&format!("nat,forward={text}")).is_ok());
    }
    for bad in ["tcp:2222-:22", "sctp::1-:2", "tcp:1:2"] {
        let toml = GOOD.replace("tcp:127.0.0.1:2222-:22", bad);
        let e = VmDefinition::parse(Path::new("vm.toml"), &toml).unwrap_err();
        assert!(e.to_string().contains("vm.toml:17:"), "{e}");
        assert!(net::parse_nic(&format!("nat,forward={bad}")).is_err());
    }
}
