//! Linux's virtio_balloon driver against vessel's balloon through Firecracker's API, in a
//! VM loaded from a snapshot of a booted Debian guest.

use std::time::Duration;

use crate::common::api::{curl, ApiVmm};
use crate::common::nested::{debian_guest, nested_cmdline};
use crate::common::out_dir;

/// VmRSS of process `pid`, in KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// `GET /balloon/statistics` as JSON.
fn balloon_statistics(vmm: &ApiVmm) -> serde_json::Value {
    let (code, body) = curl(&vmm.sock, "GET", "/balloon/statistics", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Poll the balloon's statistics until the driver holds `mib` MiB.
fn wait_for_balloon(vmm: &ApiVmm, mib: u64) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let stats = balloon_statistics(vmm);
        if stats["actual_mib"] == mib {
            return stats;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30 * 60),
            "the balloon never reached {mib} MiB: {stats}\n{}",
            vmm.serial()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait (at most 60 minutes: the boot is slow where ring 0 is emulated, and slower on a
/// loaded host) for `marker` on the serial console.
fn wait_for_serial(vmm: &mut ApiVmm, marker: &str) {
    let start = std::time::Instant::now();
    while !vmm.serial().contains(marker) {
        let exited = vmm.child.try_wait().unwrap();
        assert!(
            exited.is_none() && start.elapsed() < Duration::from_secs(60 * 60),
            "no {marker} ({exited:?}):\n{}",
            vmm.serial()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Linux's virtio_balloon driver against vessel's balloon through Firecracker's API, across
/// a snapshot: the booted guest is snapshotted and loaded into a second VMM as a copy
/// (`VESSEL_SNAPSHOT_MEMORY=copy`), which makes all its RAM resident in the VMM — on
/// kvm_pvm a guest writes new memory at about 0.4 MiB/s, so having the guest fill its RAM
/// (filling 700 MiB took 30 min on 2026-12-06) does not fit CI. Then `PATCH /balloon`
/// inflates the balloon by 128 MiB and the VMM's RSS drops by at least 100 MiB,
/// `GET /balloon/statistics` reports the guest's own figures, and the balloon deflates.
/// (On kvm_pvm the driver inflates at about 0.5 MiB/s, so 128 MiB is what CI can afford;
/// docs/balloon.md has the figures of a 512 MiB run.)
#[test]
#[ignore = "30-50 minutes where ring 0 is emulated (a boot, then inflating and deflating at \
            ~0.5 MiB/s): more than CI's budget holds next to the other boots; run with \
            `cargo test --test nested -- --ignored balloon`"]
fn debian_kernel_gives_memory_back_through_vessels_balloon() {
    let (kernel, initrd) = debian_guest();
    let mut first = ApiVmm::spawn("nested-balloon", &[]);
    // Only the balloon's driver and the virtio-pci core: every module load is slow ring-0
    // work where ring 0 is emulated.
    let cmdline = format!(
        "{} vessel.modules=virtio_ring,virtio,virtio_pci_modern_dev,virtio_pci_legacy_dev,\
         virtio_pci,virtio_balloon vessel.test=nested-balloon",
        nested_cmdline()
    );
    let boot = serde_json::json!({
        "kernel_image_path": kernel,
        "initrd_path": initrd,
        "boot_args": cmdline,
    });
    for (method, path, body) in [
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 1, "mem_size_mib": 384}"#.to_string(),
        ),
        ("PUT", "/boot-source", boot.to_string()),
        (
            "PUT",
            "/balloon",
            r#"{"amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": 1}"#
                .to_string(),
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type": "InstanceStart"}"#.to_string(),
        ),
    ] {
        let (code, answer) = first.call(method, path, &body);
        assert_eq!(code, 204, "{method} {path}: {answer}");
    }
    wait_for_serial(&mut first, "VESSEL-BALLOON-READY");
    let state = out_dir().join("nested-balloon.state");
    let memory = out_dir().join("nested-balloon.mem");
    for file in [&state, &memory] {
        let _ = std::fs::remove_file(file);
    }
    assert_eq!(first.call("PATCH", "/vm", r#"{"state": "Paused"}"#).0, 204);
    let create = serde_json::json!({"snapshot_path": state, "mem_file_path": memory});
    let (code, answer) = first.call("PUT", "/snapshot/create", &create.to_string());
    assert_eq!(code, 204, "{answer}");
    drop(first);
    let mut vmm = ApiVmm::spawn_with_env(
        "nested-balloon-copy",
        &[],
        &[("VESSEL_SNAPSHOT_MEMORY", "copy")],
    );
    let load =
        serde_json::json!({"snapshot_path": state, "mem_file_path": memory, "resume_vm": true});
    let (code, answer) = vmm.call("PUT", "/snapshot/load", &load.to_string());
    assert_eq!(code, 204, "{answer}");
    let pid = vmm.child.id();
    let full = vm_rss_kib(pid);
    assert!(
        full >= 380 * 1024,
        "the copied RAM is resident: VmRSS {full} KiB"
    );
    let start = std::time::Instant::now();
    let (code, answer) = vmm.call("PATCH", "/balloon", r#"{"amount_mib": 128}"#);
    assert_eq!(code, 204, "{answer}");
    let inflated = wait_for_balloon(&vmm, 128);
    let reclaim = start.elapsed();
    let after = vm_rss_kib(pid);
    eprintln!("VmRSS {full} KiB -> {after} KiB after inflating 128 MiB in {reclaim:?}; {inflated}");
    assert!(
        full.saturating_sub(after) >= 100 * 1024,
        "VmRSS fell by {} KiB only",
        full.saturating_sub(after)
    );
    wait_for_serial(&mut vmm, "VESSEL-BALLOON-INFLATED");
    let stats = balloon_statistics(&vmm);
    for key in ["free_memory", "total_memory", "available_memory"] {
        assert!(stats[key].as_u64().is_some_and(|v| v > 0), "{key}: {stats}");
    }
    assert!(
        stats["total_memory"].as_u64().unwrap() < 384 << 20,
        "the guest's total memory excludes what it gave away: {stats}"
    );
    let (code, answer) = vmm.call("PATCH", "/balloon", r#"{"amount_mib": 0}"#);
    assert_eq!(code, 204, "{answer}");
    wait_for_balloon(&vmm, 0);
    let (status, stderr) = vmm.wait_exit(Duration::from_secs(30 * 60));
    let serial = vmm.serial();
    assert!(
        serial.contains("VESSEL-TEST-PASS nested-balloon"),
        "{serial}\n{stderr}"
    );
    assert_eq!(status, Some(0), "{stderr}");
    eprintln!("time to reclaim 128 MiB: {reclaim:?}; statistics: {stats}");
}
