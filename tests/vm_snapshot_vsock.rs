//! Snapshots of a VM with a virtio-vsock, through the API (Firecracker's way): the device
//! is saved without connections, a new VMM loads it and listens on the saved socket path
//! again (the old VMM's socket file, left behind when it was killed, is replaced), save →
//! load → save gives the same machine and device state, and the guest goes on where it
//! was. (What the guest's driver sees, a transport reset, is tested on the device model in
//! crates/virtio/tests/vsock_snapshot.rs.)

mod common;

use std::os::unix::net::UnixStream;
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

fn read_json(path: &PathBuf) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_vm_with_vsock_round_trips_through_a_snapshot() {
    let kernel = multiboot_guest(
        "counter",
        &["multiboot_header.S", "counter_guest.c"],
        "multiboot.ld",
    );
    let uds = fresh("vm-snapshot-vsock.sock");
    let first = Vmm::spawn("vm-snapshot-vsock-first", &[]);
    let machine = r#"{"vcpu_count": 1, "mem_size_mib": 64}"#;
    assert_eq!(first.call("PUT", "/machine-config", machine).0, 204);
    let vsock = format!(
        r#"{{"guest_cid": 7, "uds_path": {:?}}}"#,
        uds.display().to_string()
    );
    let (code, body) = first.call("PUT", "/vsock", &vsock);
    assert_eq!(code, 204, "{body}");
    let boot = format!(
        r#"{{"kernel_image_path": {:?}, "boot_args": "steps=20 delay=100000"}}"#,
        kernel.display().to_string()
    );
    assert_eq!(first.call("PUT", "/boot-source", &boot).0, 204);
    let (code, body) = first.call("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    assert_eq!(code, 204, "{body}");
    wait_for("the guest to count to 3", || {
        first.serial().contains("count=3\n")
    });
    let (state1, mem1) = snapshot(&first, "vm-snapshot-vsock-1");
    drop(first);
    assert!(uds.exists(), "the killed VMM's socket file is left behind");

    let mut second = Vmm::spawn("vm-snapshot-vsock-second", &[]);
    let load = format!(
        r#"{{"snapshot_path": {:?}, "mem_file_path": {:?}, "resume_vm": false}}"#,
        state1.display().to_string(),
        mem1.display().to_string()
    );
    let (code, body) = second.call("PUT", "/snapshot/load", &load);
    assert_eq!(code, 204, "{body}");
    UnixStream::connect(&uds).expect("the loaded VMM listens on the saved socket path");
    let (state2, _mem2) = snapshot(&second, "vm-snapshot-vsock-2");
    let (s1, s2) = (read_json(&state1), read_json(&state2));
    assert_eq!(s1["machine"], s2["machine"]);
    assert_eq!(s1["machine"]["vsock"]["cid"], 7, "{}", s1["machine"]);
    assert_eq!(
        s1["devices"], s2["devices"],
        "device state changed by save -> load -> save"
    );
    let saved = &s1["devices"]["virtio"][0];
    assert_eq!(saved["device_type"], 19);
    assert_eq!(saved["device"]["Vsock"]["cid"], 7, "{saved}");

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
