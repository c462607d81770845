//! vessel's command line as a new user meets it, without booting a guest: sizes, `disk`
//! options as qemu-img's, one forward syntax, `create` flags and files, `ls` with a broken
//! VM, exit statuses, completions and man pages. Each test runs the binary.

mod common;

use std::path::{Path, PathBuf};

use common::state_dir::TestState as State;
use common::{out_dir, vessel, Run, TIMEOUT};

fn run(args: &[&str]) -> Run {
    vessel(args, TIMEOUT)
}

/// The status and stderr of a command that must fail with `code`, stderr naming `want`.
fn fails(r: &Run, code: i32, want: &str) {
    assert_eq!(
        r.status,
        Some(code),
        "stdout {}\nstderr {}",
        r.stdout,
        r.stderr
    );
    assert!(r.stderr.contains(want), "want {want:?} in {}", r.stderr);
}

/// A scratch directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = out_dir().join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file that stands for a kernel (create and validate only check that it exists).
fn kernel(dir: &Path) -> String {
    let k = dir.join("kernel");
    std::fs::write(&k, b"not booted").unwrap();
    k.to_str().unwrap().into()
}

fn write_def(dir: &Path, name: &str, body: &str) -> String {
    let f = dir.join(format!("{name}.vm.toml"));
    let k = kernel(dir);
    std::fs::write(
        &f,
        format!("name = \"{name}\"\nmemory = \"32M\"\n\n[boot]\nkernel = {k:?}\n{body}"),
    )
    .unwrap();
    f.to_str().unwrap().into()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn a_size_without_unit_is_refused_everywhere() {
    let dir = scratch("sizes");
    let k = kernel(&dir);
    let img = dir.join("x.qcow2");
    let img = img.to_str().unwrap();
    let st = State::new("cli-sizes");
    for r in [
        run(&["run", "--kernel", &k, "--memory", "512"]),
        run(&["disk", "create", img, "-f", "qcow2", "--size", "20"]),
        st.vessel(&["create", "v", "--kernel", &k, "--disk-size", "20"]),
        st.vessel(&["create", "v", "--kernel", &k, "--memory", "64"]),
    ] {
        fails(&r, 2, "give a unit: B for bytes");
    }
    assert!(!Path::new(img).exists());
    let def = write_def(&dir, "plain", "");
    std::fs::write(
        &def,
        std::fs::read_to_string(&def)
            .unwrap()
            .replace("\"32M\"", "\"32\""),
    )
    .unwrap();
    fails(
        &run(&["validate", &def]),
        2,
        "plain.vm.toml:2:10: invalid size '32'",
    );
    // Bytes are written as such.
    assert_eq!(
        run(&["disk", "create", img, "-f", "raw", "--size", "4096B"]).status,
        Some(0)
    );
}

#[test]
fn disk_convert_reads_f_as_input_and_o_as_output_format() {
    let dir = scratch("convert");
    let q = dir.join("a.qcow2");
    let raw = dir.join("a.raw");
    let (q, raw) = (q.to_str().unwrap(), raw.to_str().unwrap());
    let r = run(&["disk", "create", q, "-f", "qcow2", "-s", "16M"]);
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains("created") && r.stdout.contains("qcow2, virtual size 16.0 MiB"),
        "{}",
        r.stdout
    );
    let r = run(&["disk", "convert", "-f", "qcow2", "-O", "raw", q, raw]);
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("converted"), "{}", r.stdout);
    let info = json(&run(&["disk", "info", raw, "--json"]).stdout);
    assert_eq!(info["format"], "raw", "{info}");
    // -f alone names the input: the output format is still needed.
    let other = dir.join("b.raw");
    fails(
        &run(&["disk", "convert", "-f", "raw", q, other.to_str().unwrap()]),
        2,
        "--output-format",
    );
    // A wrong input format is an error, not a silent guess.
    let r = run(&[
        "disk",
        "convert",
        "-f",
        "vdi",
        "-O",
        "raw",
        q,
        other.to_str().unwrap(),
    ]);
    assert_ne!(r.status, Some(0), "{}", r.stdout);
    assert!(r.stderr.contains("vdi"), "{}", r.stderr);
}

#[test]
fn disk_resize_grows_by_plus_and_says_what_it_did() {
    let dir = scratch("resize");
    let q = dir.join("a.qcow2");
    let q = q.to_str().unwrap();
    assert_eq!(
        run(&["disk", "create", q, "-f", "qcow2", "-s", "20M"]).status,
        Some(0)
    );
    let r = run(&["disk", "resize", q, "+10M"]);
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains("from 20.0 MiB to 30.0 MiB"),
        "{}",
        r.stdout
    );
    let info = json(&run(&["disk", "info", q, "--json"]).stdout);
    assert_eq!(info["virtual-size"], 30 << 20, "{info}");
    let r = run(&["disk", "resize", q, "40M"]);
    assert!(r.stdout.contains("to 40.0 MiB"), "{}", r.stdout);
    fails(
        &run(&["disk", "resize", q, "-1G"]),
        2,
        "shrink by giving the new size",
    );
}

#[test]
fn toml_and_nic_take_the_same_forwards() {
    let dir = scratch("forwards");
    let ok = write_def(
        &dir,
        "fwd",
        "[[nic]]\nmode = \"nat\"\nforward = [\"tcp::80-10.0.2.15:80\"]\n",
    );
    let r = run(&["validate", &ok]);
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    let bad = write_def(
        &dir,
        "short",
        "[[nic]]\nmode = \"nat\"\nforward = [\"tcp:2222-:22\"]\n",
    );
    fails(&run(&["validate", &bad]), 2, "short.vm.toml:8:");
    let k = kernel(&dir);
    fails(
        &run(&["run", "--kernel", &k, "--nic", "nat,forward=tcp:2222-:22"]),
        2,
        "invalid forward",
    );
}

#[test]
fn ls_shows_where_forwards_listen_and_lists_past_a_broken_vm() {
    let dir = scratch("ls");
    let st = State::new("cli-ls");
    let def = write_def(
        &dir,
        "web",
        "[[nic]]\nmode = \"nat\"\nforward = [\"tcp::2222-:22\", \"tcp:0.0.0.0:8080-:80\"]\n",
    );
    st.ok(&["create", "web", "--from", &def]);
    st.ok(&["create", "other", "--from", &def]);
    std::fs::write(st.0.join("other/vm.toml"), "name = = 1\n").unwrap();
    let r = st.vessel(&["ls"]);
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("127.0.0.1:2222->22/tcp,0.0.0.0:8080->80/tcp"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("other") && r.stdout.contains("broken"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("other/vm.toml:1:"), "{}", r.stderr);
    let list = json(&st.ok(&["ls", "--json"]));
    let web = list
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web")
        .unwrap();
    assert_eq!(web["memory_mib"], 32);
    assert_eq!(
        web["ports"][0],
        serde_json::json!({"protocol": "tcp", "host_address": "127.0.0.1", "host_port": 2222, "guest_address": null, "guest_port": 22})
    );
    assert_eq!(web["ports"][1]["host_address"], "0.0.0.0");
    let other = list
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "other")
        .unwrap();
    assert_eq!(other["state"], "broken");
}

#[test]
fn create_from_a_file_applies_the_flags_over_it() {
    let dir = scratch("overrides");
    let st = State::new("cli-overrides");
    let def = write_def(&dir, "base", "");
    let out = st.ok(&[
        "create",
        "big",
        "--from",
        &def,
        "--cpus",
        "4",
        "--memory",
        "1G",
        "--cmdline",
        "quiet",
        "--disk-size",
        "8M",
        "--json",
    ]);
    let v = json(&out);
    assert_eq!(
        (v["cpus"].as_i64(), v["memory_mib"].as_i64()),
        (Some(4), Some(1024))
    );
    assert_eq!(v["disks"], 1);
    let toml = std::fs::read_to_string(st.0.join("big/vm.toml")).unwrap();
    assert!(toml.contains("cmdline = \"quiet\""), "{toml}");
    assert!(st.0.join("big/disk.qcow2").is_file());
}

#[test]
fn create_keeps_disk_and_nic_rate_limits_in_vm_toml() {
    let dir = scratch("rates");
    let st = State::new("cli-rates");
    let k = kernel(&dir);
    let img = dir.join("data.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let disk = format!("{},rate=10M,iops=500", img.display());
    st.ok(&[
        "create",
        "r",
        "--kernel",
        &k,
        "--disk",
        &disk,
        "--nic",
        "nat,rx-rate=1M",
    ]);
    let toml = std::fs::read_to_string(st.0.join("r/vm.toml")).unwrap();
    // Per-second figures: 10 MiB and 500 requests; the NIC's as given.
    for want in ["rate = \"10485760\"", "iops = \"500\"", "rx_rate = \"1M\""] {
        assert!(toml.contains(want), "want {want}: {toml}");
    }
    st.ok(&["validate", st.0.join("r/vm.toml").to_str().unwrap()]);
    let bad = format!("{},rate=fast", img.display());
    fails(
        &st.vessel(&["create", "r2", "--kernel", &k, "--disk", &bad]),
        2,
        "invalid rate \"fast\"",
    );
}

#[test]
fn flag_errors_name_the_flag_not_a_generated_file() {
    let dir = scratch("flags");
    let st = State::new("cli-flags");
    let k = kernel(&dir);
    for (args, want) in [
        (
            vec!["create", "v", "--kernel", &k, "--memory", "lots"],
            "--memory",
        ),
        (vec!["create", "v", "--kernel", &k, "--cpus", "0"], "--cpus"),
        (
            vec!["create", "v", "--kernel", "/no/such/kernel"],
            "--kernel /no/such/kernel does not exist",
        ),
        (
            vec!["create", "v", "--kernel", &k, "--initrd", "/no/initrd"],
            "--initrd /no/initrd does not exist",
        ),
        (
            vec!["create", "v"],
            "give --from FILE, --image NAME or --kernel PATH",
        ),
    ] {
        let r = st.vessel(&args);
        fails(&r, 2, want);
        assert!(!r.stderr.contains("vm.toml"), "{args:?}: {}", r.stderr);
    }
    assert!(!st.0.join("v").exists());
}

#[test]
fn validate_and_create_check_that_files_exist() {
    let dir = scratch("files");
    let st = State::new("cli-files");
    let def = write_def(
        &dir,
        "files",
        "initrd = \"missing.cpio\"\n\n[[disk]]\npath = \"gone.raw\"\n\n[[disk]]\npath = \"new.qcow2\"\nsize = \"8M\"\n",
    );
    let r = run(&["validate", &def]);
    fails(&r, 2, "files.vm.toml:6:10: initrd ");
    assert!(
        r.stderr.contains("files.vm.toml:9:8: disk "),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("new.qcow2"),
        "a disk with a size is made by create"
    );
    fails(
        &st.vessel(&["create", "files", "--from", &def]),
        2,
        "does not exist",
    );
    assert!(!st.0.join("files").exists());
}

#[test]
fn run_with_api_sock_refuses_the_flags_that_configure_a_vm() {
    let sock = out_dir().join("cli-api.sock");
    let sock = sock.to_str().unwrap();
    for flag in [
        &["--memory", "1G"][..],
        &["--cpus", "2"],
        &["--cmdline", "quiet"],
        &["--pit", "on"],
    ] {
        let mut args = vec!["run", "--api-sock", sock];
        args.extend_from_slice(flag);
        fails(&run(&args), 2, "cannot be used with");
    }
}

#[test]
fn exit_statuses_follow_one_scheme() {
    let st = State::new("cli-exit");
    // Asking for what does not exist or is not allowed: 2, in every command family.
    fails(&st.vessel(&["start", "nosuch"]), 2, "no VM named 'nosuch'");
    fails(&st.vessel(&["inspect", "bad/name"]), 2, "invalid VM name");
    fails(&st.vessel(&["snapshot", "ls", "nosuch"]), 2, "no VM named");
    fails(&run(&["disk", "info", "/no/such.img"]), 2, "/no/such.img");
    fails(&run(&["frobnicate"]), 2, "unrecognized subcommand");
}

#[test]
fn state_dir_is_refused_where_it_means_nothing() {
    let dir = scratch("state-dir");
    let d = dir.to_str().unwrap();
    fails(
        &run(&["--state-dir", d, "disk", "info", "x"]),
        2,
        "--state-dir is only for",
    );
    fails(
        &run(&["run", "--state-dir", d, "--kernel", "k"]),
        2,
        "--state-dir is only for",
    );
}

/// stdout of a command that succeeds and may print more than a pipe holds.
fn big_output(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completion_knows_the_commands() {
    let bash = big_output(&["completions", "bash"]);
    for word in [
        "create",
        "snapshot",
        "convert",
        "--output-format",
        "--state-dir",
    ] {
        assert!(bash.contains(word), "no {word} in the bash completion");
    }
    for shell in ["zsh", "fish"] {
        assert!(
            big_output(&["completions", shell]).contains("create"),
            "{shell}"
        );
    }
    fails(&run(&["completions", "tcsh"]), 2, "invalid value 'tcsh'");
}

#[test]
fn man_writes_a_page_per_command() {
    let dir = scratch("man");
    let r = run(&["man", dir.to_str().unwrap()]);
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    for page in [
        "vessel.1",
        "vessel-run.1",
        "vessel-create.1",
        "vessel-ls.1",
        "vessel-disk.1",
        "vessel-disk-convert.1",
        "vessel-snapshot-take.1",
        "vessel-image-import.1",
        "vessel-completions.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}; wrote {}", r.stdout));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    let convert = std::fs::read_to_string(dir.join("vessel-disk-convert.1")).unwrap();
    assert!(convert.contains("Input format"), "{convert}");
    // Hidden commands (the VMM process vessel start runs) have no page.
    assert!(!dir.join("vessel-vmm.1").exists());
    // One page per visible command, and nothing else.
    let pages = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(pages, r.stdout.lines().count());
}

#[test]
fn set_changes_a_stopped_vm_with_the_checks_of_create() {
    let dir = scratch("set");
    let st = State::new("cli-set");
    let k = kernel(&dir);
    let extra = dir.join("extra.raw");
    let extra = extra.to_str().unwrap();
    assert_eq!(
        run(&["disk", "create", extra, "-f", "raw", "-s", "1M"]).status,
        Some(0)
    );
    let v = json(&st.ok(&[
        "create",
        "s",
        "--kernel",
        &k,
        "--nic",
        "nat",
        "--forward",
        "tcp::2222-:22",
        "--rng",
        "--json",
    ]));
    assert_eq!(v["ports"][0]["host_port"], 2222);
    let r = st.vessel(&[
        "set",
        "s",
        "--cpus",
        "4",
        "--memory",
        "2G",
        "--forward",
        "tcp:0.0.0.0:8080-:80",
        "--disk",
        extra,
        "--disk-size",
        "8M",
        "--pit",
        "off",
        "--rng",
        "off",
    ]);
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("updated VM 's'"), "{}", r.stdout);
    let v = json(&st.ok(&["ls", "--json"]))[0].clone();
    assert_eq!(
        (v["cpus"].as_i64(), v["memory_mib"].as_i64()),
        (Some(4), Some(2048))
    );
    assert_eq!(v["disks"], 2);
    assert_eq!(v["ports"][1]["host_address"], "0.0.0.0");
    assert!(st.0.join("s/disk.qcow2").is_file());
    let toml = std::fs::read_to_string(st.0.join("s/vm.toml")).unwrap();
    assert!(
        toml.contains("pit = \"off\"") && !toml.contains("rng"),
        "{toml}"
    );
    let before = toml;
    for (args, want) in [
        (vec!["set", "s"], "nothing to change"),
        (vec!["set", "s", "--cpus", "0"], "--cpus"),
        (vec!["set", "s", "--memory", "2"], "give a unit"),
        (
            vec!["set", "s", "--disk", "/no/disk"],
            "--disk /no/disk does not exist",
        ),
        (vec!["set", "s", "--disk-size", "8M"], "already has"),
        (
            vec!["set", "s", "--nic", "tap:t0", "--forward", "tcp::1-:2"],
            "--forward needs a nat",
        ),
        (
            vec!["set", "s", "--nic", "nat,forward=tcp:1-:2"],
            "invalid forward",
        ),
        (vec!["set", "nosuch", "--cpus", "2"], "no VM named"),
    ] {
        fails(&st.vessel(&args), 2, want);
    }
    let after = std::fs::read_to_string(st.0.join("s/vm.toml")).unwrap();
    assert_eq!(before, after, "a refused set changes nothing");
    // --nic replaces the NICs.
    st.ok(&["set", "s", "--nic", "internal:lab"]);
    let v = json(&st.ok(&["ls", "--json"]))[0].clone();
    assert_eq!(
        (v["nics"].as_i64(), v["ports"].as_array().map(Vec::len)),
        (Some(1), Some(0))
    );
}

/// Holds VM `name`'s lock as its running VMM does: `vessel set` sees a running VM.
fn hold_lock(st: &State, name: &str) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(st.0.join(name).join("lock"))
        .unwrap();
    // SAFETY: flock on an open file.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(locked, 0);
    file
}

#[test]
fn set_on_a_running_vm_takes_only_forwards_and_refuses_clearly() {
    let dir = scratch("set-running");
    let st = State::new("cli-set-running");
    let k = kernel(&dir);
    st.ok(&[
        "create",
        "r",
        "--kernel",
        &k,
        "--nic",
        "nat",
        "--forward",
        "tcp::2222-:22",
    ]);
    st.ok(&["create", "nn", "--kernel", &k, "--nic", "natnet:lab"]);
    st.ok(&["create", "t", "--kernel", &k, "--nic", "internal:lab"]);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let busy_fwd = format!("tcp::{busy_port}-:80");
    let _locks = [
        hold_lock(&st, "r"),
        hold_lock(&st, "nn"),
        hold_lock(&st, "t"),
    ];
    let before = std::fs::read_to_string(st.0.join("r/vm.toml")).unwrap();
    for (args, want) in [
        (
            vec!["set", "r", "--cpus", "2"],
            "only --forward and --remove-forward",
        ),
        (
            vec!["set", "r", "--forward", "tcp::8000-:80", "--memory", "1G"],
            "stop it first",
        ),
        (
            vec!["set", "r", "--forward", "udp::5353-:53"],
            "UDP forwards cannot be added to a running VM",
        ),
        (
            vec!["set", "r", "--forward", "tcp::2222-:2022"],
            "host port 2222 is already forwarded",
        ),
        (vec!["set", "r", "--forward", &busy_fwd], "is in use"),
        (
            vec!["set", "nn", "--forward", "tcp::8001-:80"],
            "only a nat NIC takes forwards while the VM runs",
        ),
        (
            vec!["set", "t", "--forward", "tcp::8002-:80"],
            "has no nat NIC",
        ),
    ] {
        fails(&st.vessel(&args), 2, want);
    }
    let after = std::fs::read_to_string(st.0.join("r/vm.toml")).unwrap();
    assert_eq!(before, after, "a refused set changes nothing");
}

#[test]
fn remove_forward_takes_a_forward_out_of_a_stopped_vm() {
    let dir = scratch("remove-forward");
    let st = State::new("cli-remove-forward");
    let k = kernel(&dir);
    st.ok(&[
        "create",
        "s",
        "--kernel",
        &k,
        "--nic",
        "nat",
        "--forward",
        "tcp::2222-:22",
        "--forward",
        "tcp::8080-:80",
    ]);
    fails(
        &st.vessel(&["set", "s", "--remove-forward", "9999"]),
        2,
        "forwards no host port 9999",
    );
    fails(
        &st.vessel(&["set", "s", "--remove-forward", "0"]),
        2,
        "--remove-forward",
    );
    st.ok(&["set", "s", "--remove-forward", "2222"]);
    let v = json(&st.ok(&["ls", "--json"]))[0].clone();
    let ports = v["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["host_port"], 8080);
}

#[test]
fn copy_storage_is_refused_where_it_would_mean_nothing() {
    // Without --incoming, a start has no disks arriving to write.
    fails(&run(&["start", "web", "--copy-storage"]), 2, "--incoming");
    // `vessel run --incoming` takes shared storage only: it has no such flag.
    fails(
        &run(&[
            "run",
            "--incoming",
            "unix:/tmp/nowhere.sock",
            "--copy-storage",
        ]),
        2,
        "--copy-storage",
    );
}
