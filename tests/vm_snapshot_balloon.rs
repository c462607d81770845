//! Snapshots of a VM with a virtio-balloon, through the API: the balloon's target, its
//! statistics interval and the rest of its state round-trip (save → load → save gives
//! the same device and machine state), the loaded VM answers the balloon requests, and the
//! guest goes on where it was.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::api::ApiVmm as Vmm;
use common::{multiboot_guest, out_dir, wait_for};

fn fresh(name: &str) -> PathBuf {
    let path = out_dir().join(name);
    let _ = std::fs::remove_file(&path);
    path
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

fn get(vmm: &Vmm, path: &str) -> serde_json::Value {
    let (code, body) = common::api::curl(&vmm.sock, "GET", path, None);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn read_json(path: &PathBuf) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_vm_with_a_balloon_round_trips_through_a_snapshot() {
    let kernel = multiboot_guest(
        "counter",
        &["multiboot_header.S", "counter_guest.c"],
        "multiboot.ld",
    );
    let first = Vmm::spawn("vm-snapshot-balloon-first", &[]);
    let machine = r#"{"vcpu_count": 1, "mem_size_mib": 128}"#;
    assert_eq!(first.call("PUT", "/machine-config", machine).0, 204);
    let balloon = r#"{"amount_mib": 16, "deflate_on_oom": true, "stats_polling_interval_s": 1, "free_page_reporting": true}"#;
    let (code, body) = first.call("PUT", "/balloon", balloon);
    assert_eq!(code, 204, "{body}");
    let boot = format!(
        r#"{{"kernel_image_path": {:?}, "boot_args": "steps=20 delay=100000"}}"#,
        kernel.display().to_string()
    );
    assert_eq!(first.call("PUT", "/boot-source", &boot).0, 204);
    let (code, body) = first.call("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    assert_eq!(code, 204, "{body}");
    // Changed at run time, so the snapshot must carry them rather than the boot values.
    assert_eq!(
        first.call("PATCH", "/balloon", r#"{"amount_mib": 48}"#).0,
        204
    );
    let (code, body) = first.call(
        "PATCH",
        "/balloon/statistics",
        r#"{"stats_polling_interval_s": 3}"#,
    );
    assert_eq!(code, 204, "{body}");
    wait_for("the guest to count to 3", || {
        first.serial().contains("count=3\n")
    });
    let (state1, mem1) = snapshot(&first, "vm-snapshot-balloon-1");
    drop(first);

    let mut second = Vmm::spawn("vm-snapshot-balloon-second", &[]);
    let load = format!(
        r#"{{"snapshot_path": {:?}, "mem_file_path": {:?}, "resume_vm": false}}"#,
        state1.display().to_string(),
        mem1.display().to_string()
    );
    let (code, body) = second.call("PUT", "/snapshot/load", &load);
    assert_eq!(code, 204, "{body}");
    let shown = get(&second, "/balloon");
    assert_eq!(shown["amount_mib"], 48, "{shown}");
    assert_eq!(shown["stats_polling_interval_s"], 3, "{shown}");
    assert_eq!(shown["deflate_on_oom"], true, "{shown}");
    assert_eq!(shown["free_page_reporting"], true, "{shown}");
    let stats = get(&second, "/balloon/statistics");
    assert_eq!(stats["target_mib"], 48, "{stats}");
    assert_eq!(stats["target_pages"], 48 * 256, "{stats}");
    let (state2, _mem2) = snapshot(&second, "vm-snapshot-balloon-2");
    let (s1, s2) = (read_json(&state1), read_json(&state2));
    assert_eq!(s1["machine"], s2["machine"]);
    assert_eq!(
        s1["devices"], s2["devices"],
        "device state changed by save -> load -> save"
    );
    let saved = &s1["devices"]["virtio"][0];
    assert_eq!(saved["device_type"], 5);
    let state = &saved["device"]["Balloon"];
    assert_eq!(state["target_pages"], 48 * 256, "{state}");
    assert_eq!(state["config"]["stats_polling_interval_s"], 3, "{state}");

    assert_eq!(
        second.call("PATCH", "/vm", r#"{"state": "Resumed"}"#).0,
        204
    );
    let (status, err) = second.wait_exit(Duration::from_secs(180));
    let after = second.serial();
    assert_eq!(status, Some(43), "stderr: {err}\nserial: {after}");
    assert!(
        !after.contains("counter guest up"),
        "the guest restarted: {after}"
    );
}
