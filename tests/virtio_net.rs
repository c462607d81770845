//! virtio-net through vessel's PCI platform on KVM: two VMs on one `internal:` network
//! greet each other with Ethernet frames; a third on another network hears nothing. Two
//! VMs on one `natnet:` network get their DHCP offers from their NATs (one gets its
//! previous address back), with MTU 65520 offered.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{multiboot_guest, out_dir, TIMEOUT};

fn start(kernel: &Path, nic: &str, runtime: &Path, cmdline: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args([
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "32M",
            "--nic",
            nic,
            "--cmdline",
            cmdline,
        ])
        .env("XDG_RUNTIME_DIR", runtime)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(mut child: Child, timeout: Duration) -> (Option<i32>, String, String) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The multiboot guest that drives virtio-net (tests/guests/virtio_net_guest.c).
fn net_guest() -> PathBuf {
    multiboot_guest(
        "virtio_net",
        &["multiboot_header.S", "virtio_net_guest.c"],
        "multiboot.ld",
    )
}

/// An empty `XDG_RUNTIME_DIR` for one test's networks.
fn fresh_runtime(name: &str) -> PathBuf {
    let runtime = out_dir().join(name);
    let _ = std::fs::remove_dir_all(&runtime);
    std::fs::create_dir_all(&runtime).unwrap();
    runtime
}

/// Two VMs with NICs `nic_a` (MAC …:0a) and `nic_b` (MAC …:0b) greet each other; both
/// must exit 0 having heard the other. Returns A's output.
fn greet_pair(nic_a: &str, nic_b: &str, runtime: &str) -> String {
    let kernel = net_guest();
    let runtime = fresh_runtime(runtime);
    let a = start(&kernel, nic_a, &runtime, "net");
    let b = start(&kernel, nic_b, &runtime, "net");
    let (code_a, out_a, err_a) = finish(a, TIMEOUT);
    let (code_b, out_b, err_b) = finish(b, TIMEOUT);
    assert_eq!(code_a, Some(0), "A: {out_a}\n{err_a}");
    assert_eq!(code_b, Some(0), "B: {out_b}\n{err_b}");
    assert!(
        out_a.contains("received \"vessel-net-test hello\" from 52:54:00:00:00:0b"),
        "{out_a}"
    );
    assert!(
        out_b.contains("received \"vessel-net-test hello\" from 52:54:00:00:00:0a"),
        "{out_b}"
    );
    out_a
}

#[test]
fn two_vms_on_an_internal_network_exchange_frames() {
    let out_a = greet_pair(
        "internal:lan1,mac=52:54:00:00:00:0a",
        "internal:lan1,mac=52:54:00:00:00:0b",
        "net-runtime",
    );
    assert!(
        out_a.contains("virtio-net: mac 52:54:00:00:00:0a\n"),
        "{out_a}"
    );
}

/// Tight limits (2 KiB/s: a bucket of about three greetings) on one VM's both directions
/// and the other's receive: frames wait for their budget on the limiters' timers and
/// still get through, with the VMMs confined as always.
#[test]
fn rate_limited_vms_still_exchange_frames() {
    greet_pair(
        "internal:lanR,mac=52:54:00:00:00:0a,rate=2K",
        "internal:lanR,mac=52:54:00:00:00:0b,rx-rate=2K",
        "net-runtime-rate",
    );
}

#[test]
fn a_vm_on_another_internal_network_hears_nothing() {
    let kernel = net_guest();
    let runtime = fresh_runtime("net-runtime-isolated");
    let a = start(&kernel, "internal:lanA", &runtime, "rounds=30");
    let c = start(&kernel, "internal:lanC", &runtime, "rounds=30");
    let (code_a, out_a, _) = finish(a, TIMEOUT);
    let (code_c, out_c, _) = finish(c, TIMEOUT);
    // Each gives up after its rounds: debug-exit 0x42 = status (0x42 << 1) | 1.
    assert_eq!(code_a, Some((0x42 << 1) | 1), "{out_a}");
    assert_eq!(code_c, Some((0x42 << 1) | 1), "{out_c}");
    assert!(out_a.contains("nothing received") && out_c.contains("nothing received"));
}

fn passt_installed() -> bool {
    Command::new("passt").arg("--version").output().is_ok()
}

#[test]
fn two_vms_on_a_nat_network_get_distinct_dhcp_offers() {
    if !passt_installed() {
        eprintln!("SKIPPED: passt (apt-get install passt) is not installed");
        return;
    }
    let kernel = net_guest();
    let runtime = fresh_runtime("natnet-runtime");
    // b held 10.0.2.16 before (a lease file records its MAC): it gets it back, whatever
    // the order the two VMMs start in; a gets the lowest free address.
    let leases = runtime.join("vessel/natnet/lab/leases");
    std::fs::create_dir_all(&leases).unwrap();
    std::fs::write(leases.join("10.0.2.16"), "52:54:00:00:01:0b\n").unwrap();
    let a = start(
        &kernel,
        "natnet:lab,mac=52:54:00:00:01:0a",
        &runtime,
        "dhcp=1 rounds=200",
    );
    let b = start(
        &kernel,
        "natnet:lab,mac=52:54:00:00:01:0b",
        &runtime,
        "dhcp=1 rounds=200",
    );
    let (code_a, out_a, err_a) = finish(a, TIMEOUT);
    let (code_b, out_b, err_b) = finish(b, TIMEOUT);
    assert_eq!(code_a, Some(0), "A: {out_a}\n{err_a}");
    assert_eq!(code_b, Some(0), "B: {out_b}\n{err_b}");
    for out in [&out_a, &out_b] {
        assert!(out.contains("virtio-net: mtu 65520\n"), "{out}");
    }
    let offer = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("virtio-net: dhcp offer "))
            .map(str::to_owned)
    };
    assert_eq!(offer(&out_a).as_deref(), Some("10.0.2.15"), "A: {out_a}");
    assert_eq!(offer(&out_b).as_deref(), Some("10.0.2.16"), "B: {out_b}");
}

#[test]
fn a_vm_on_a_host_only_network_gets_its_address_by_dhcp() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: host-only networks need CAP_NET_ADMIN (run as root)");
        return;
    }
    let kernel = net_guest();
    let runtime = fresh_runtime("hostonly-runtime");
    let name = format!("h{}", std::process::id() % 100_000);
    let vm = start(
        &kernel,
        &format!("hostonly:{name},mac=52:54:00:00:02:0a"),
        &runtime,
        "dhcp=1 rounds=200",
    );
    let (code, out, err) = finish(vm, TIMEOUT);
    let _ = Command::new("ip")
        .args(["link", "del", &format!("vho-{name}")])
        .status();
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("virtio-net: dhcp offer 192.168.56.101\n"),
        "{out}"
    );
}
