//! Snapshots of a VM with a virtio-net interface (NAT mode) and a virtio-console, through
//! the API: the state round-trips (save → load → save gives the same device and machine
//! state), and after the load the guest's NIC works through the fresh passt (it gets a
//! DHCP offer) and its console output goes on in the same file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::api::ApiVmm as Vmm;
use common::{multiboot_guest, out_dir, wait_for};

/// Starts a VMM named `name`, with a virtio-console writing to `console2` when given.
fn spawn(name: &str, console2: Option<&Path>) -> Vmm {
    let extra: Vec<String> = console2
        .map(|p| vec!["--console2".into(), format!("file:{}", p.display())])
        .unwrap_or_default();
    Vmm::spawn(name, &extra)
}

/// Pauses the VM and snapshots it into `name`.state / `name`.mem.
fn snapshot(vmm: &Vmm, name: &str) -> (PathBuf, PathBuf) {
    assert_eq!(vmm.call("PATCH", "/vm", r#"{"state": "Paused"}"#).0, 204);
    let state = fresh(&format!("{name}.state"));
    let mem = fresh(&format!("{name}.mem"));
    let create = format!(
        r#"{{"snapshot_path": {:?}, "mem_file_path": {:?}}}"#,
        state.display().to_string(),
        mem.display().to_string()
    );
    let (code, body) = vmm.call("PUT", "/snapshot/create", &create);
    assert_eq!(code, 204, "{body}");
    (state, mem)
}

fn fresh(name: &str) -> PathBuf {
    let path = out_dir().join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn passt_installed() -> bool {
    Command::new("passt").arg("--version").output().is_ok()
}

/// The JSON paths where `a` and `b` differ.
fn differences(a: &serde_json::Value, b: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => differences(v, w, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                differences(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// Only time stamps may differ between two snapshots of one paused guest: the kvmclock,
/// the PIT channels' count load times (host nanoseconds) and each vCPU's time stamp counter
/// (MSR 0x10); every device and the machine are byte-identical.
fn may_change(state: &serde_json::Value, path: &str) -> bool {
    if path.starts_with(".vm.clock[") || path.starts_with(".vm.pit[") {
        return true;
    }
    let Some(rest) = path.strip_prefix(".vcpus[") else {
        return false;
    };
    let parse = |s: &str| s.split(']').next().and_then(|n| n.parse::<usize>().ok());
    let (Some(cpu), Some(msr)) = (parse(rest), rest.split(".msrs[").nth(1).and_then(parse)) else {
        return false;
    };
    path.ends_with(".data") && state["vcpus"][cpu]["msrs"][msr]["index"] == 0x10
}

#[test]
fn a_nat_vm_with_a_console_round_trips_and_keeps_its_devices_working() {
    if !passt_installed() {
        eprintln!("skipped: passt is not installed");
        return;
    }
    let kernel = multiboot_guest(
        "virtio_net",
        &["multiboot_header.S", "virtio_net_guest.c"],
        "multiboot.ld",
    );
    let console = fresh("vm-snapshot-net-console.log");
    let first = spawn("vm-snapshot-net-first", Some(&console));
    let (code, body) = first.call(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "mode": "nat"}"#,
    );
    assert_eq!(code, 204, "{body}");
    let machine = r#"{"vcpu_count": 1, "mem_size_mib": 128}"#;
    assert_eq!(first.call("PUT", "/machine-config", machine).0, 204);
    let boot = format!(
        r#"{{"kernel_image_path": {:?}, "boot_args": "dhcp=1 console=1 wait=40 delay=200000 rounds=200"}}"#,
        kernel.display().to_string()
    );
    assert_eq!(first.call("PUT", "/boot-source", &boot).0, 204);
    let (code, body) = first.call("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    assert_eq!(code, 204, "{body}");
    wait_for("the guest to wait 3 steps", || {
        first.serial().contains("wait=3\n")
    });
    let (state1, mem1) = snapshot(&first, "vm-snapshot-net-1");
    let before = first.serial();
    assert!(
        !before.contains("wait=40"),
        "the guest went on too early: {before}"
    );
    assert!(!before.contains("dhcp offer"), "{before}");
    drop(first);
    let console_before = std::fs::read_to_string(&console).unwrap();
    assert_eq!(console_before, "console: net up\n");

    // Loaded paused into a new VMM (no --console2: the state names the file), then
    // saved again.
    let mut second = spawn("vm-snapshot-net-second", None);
    let load = format!(
        r#"{{"snapshot_path": {:?}, "mem_file_path": {:?}, "resume_vm": false}}"#,
        state1.display().to_string(),
        mem1.display().to_string()
    );
    let started = Instant::now();
    let (code, body) = second.call("PUT", "/snapshot/load", &load);
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(code, 204, "{body}");
    let (state2, mem2) = snapshot(&second, "vm-snapshot-net-2");
    let s1: serde_json::Value = serde_json::from_slice(&std::fs::read(&state1).unwrap()).unwrap();
    let s2: serde_json::Value = serde_json::from_slice(&std::fs::read(&state2).unwrap()).unwrap();
    assert_eq!(s1["machine"], s2["machine"]);
    assert_eq!(
        s1["devices"], s2["devices"],
        "device state changed by save -> load -> save"
    );
    let mut changed = Vec::new();
    differences(&s1, &s2, "", &mut changed);
    eprintln!("fields that differ between the two state files: {changed:?}");
    assert!(changed.iter().all(|p| may_change(&s1, p)), "{changed:?}");
    assert!(
        std::fs::read(&mem1).unwrap() == std::fs::read(&mem2).unwrap(),
        "the memory files differ"
    );
    let net = &s1["devices"]["virtio"][0];
    assert_eq!(net["device_type"], 1);
    assert!(net["device"]["Net"].is_object(), "{net}");
    assert!(s1["devices"]["virtio"][1]["device"]["Console"].is_object());

    // Resumed: the guest's DHCP goes through the new passt, and its console goes on.
    assert_eq!(
        second.call("PATCH", "/vm", r#"{"state": "Resumed"}"#).0,
        204
    );
    let (status, err) = second.wait_exit(Duration::from_secs(120));
    let after = second.serial();
    assert_eq!(status, Some(0), "stderr: {err}\nserial: {after}");
    assert!(
        after.contains("virtio-net: dhcp offer 10.0.2.15"),
        "{after}"
    );
    assert!(
        !after.contains("virtio-net: mac"),
        "the guest restarted: {after}"
    );
    let console_after = std::fs::read_to_string(&console).unwrap();
    assert_eq!(console_after, "console: net up\nconsole: dhcp done\n");
    eprintln!(
        "snapshot of a 128 MiB guest with virtio-net (nat) and virtio-console: load {load_ms:.1} ms, state file {} bytes",
        std::fs::metadata(&state1).unwrap().len()
    );
}
