//! Snapshots of running VMs through Firecracker's API (`PUT /snapshot/create` and
//! `/snapshot/load`): a counting guest is paused and snapshotted, its VMM killed, and a new
//! `vessel run --api-sock` resumes it from the snapshot; the count goes on where it was.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::api::curl;
use common::{counts, multiboot_guest, out_dir, wait_for};

/// How long a restored guest gets to count to the end: serial output is slow on a nested
/// KVM, and slower when other VMs share the host's CPUs.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// How far the guest counts, and how long it spins per step.
const STEPS: u64 = 20;
const DELAY: u64 = 100_000;
/// The same for the 2-vCPU guest, whose AP spins on the second host CPU.
const SMP_STEPS: u64 = 12;
const SMP_DELAY: u64 = 30_000;

use common::api::ApiVmm as Vmm;

fn counter_guest() -> PathBuf {
    multiboot_guest(
        "counter",
        &["multiboot_header.S", "counter_guest.c"],
        "multiboot.ld",
    )
}

/// Configures and starts the counting guest with 128 MiB and `cpus` vCPUs.
fn boot_counter(vmm: &Vmm, cpus: u8) {
    boot(
        vmm,
        &counter_guest(),
        cpus,
        &format!("steps={STEPS} delay={DELAY}"),
    );
}

/// Configures and starts `kernel` with 128 MiB, `cpus` vCPUs and `args` as boot arguments.
fn boot(vmm: &Vmm, kernel: &Path, cpus: u8, args: &str) {
    let machine = format!(r#"{{"vcpu_count": {cpus}, "mem_size_mib": 128}}"#);
    assert_eq!(vmm.call("PUT", "/machine-config", &machine).0, 204);
    let boot = format!(
        r#"{{"kernel_image_path": {:?}, "boot_args": {args:?}}}"#,
        kernel.display().to_string()
    );
    assert_eq!(vmm.call("PUT", "/boot-source", &boot).0, 204);
    let (code, body) = vmm.call("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    assert_eq!(code, 204, "{body}");
}

/// Wait for a restored counting guest to finish: exit status 43, and no sign that it
/// booted again. Its serial output in the new VMM.
fn finished_without_restart(vmm: &mut Vmm) -> String {
    let (status, err) = vmm.wait_exit(RUN_TIMEOUT);
    let after = vmm.serial();
    assert_eq!(
        status,
        Some(43),
        "stderr: {err}\nserial after restore: {after}"
    );
    assert!(
        !after.contains("counter guest up"),
        "the guest restarted: {after}"
    );
    after
}

/// Load a snapshot into `vmm` (Firecracker's `mem_backend` form) and resume the guest; how
/// long the call took, in ms.
fn load_and_resume(vmm: &Vmm, state: &Path, mem: &Path) -> f64 {
    let load = format!(
        r#"{{"snapshot_path": {:?}, "mem_backend": {{"backend_type": "File", "backend_path": {:?}}}, "resume_vm": true}}"#,
        state.display().to_string(),
        mem.display().to_string()
    );
    let started = Instant::now();
    let (code, body) = vmm.call("PUT", "/snapshot/load", &load);
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(code, 204, "{body}");
    load_ms
}

/// The AP's counts the SMP guest prints (`count=N ap=M`), in order.
fn ap_counts(serial: &str) -> Vec<u64> {
    serial
        .lines()
        .filter_map(|l| l.split_once(" ap=")?.1.parse().ok())
        .collect()
}

#[test]
fn a_snapshot_of_a_counting_guest_resumes_in_a_new_vmm_where_it_was() {
    let first = Vmm::spawn("vm-snapshot-first", &[]);
    boot_counter(&first, 1);
    wait_for("the guest to count to 5", || {
        counts(&first.serial()).len() >= 5
    });
    let state = fresh("vm-snapshot.state");
    let mem = fresh("vm-snapshot.mem");
    let create = format!(
        r#"{{"snapshot_type": "Full", "snapshot_path": {:?}, "mem_file_path": {:?}}}"#,
        state.display().to_string(),
        mem.display().to_string()
    );
    // Firecracker's rules: only a paused VM, only Full snapshots.
    let (code, body) = first.call("PUT", "/snapshot/create", &create);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("paused"), "{body}");
    assert_eq!(first.call("PATCH", "/vm", r#"{"state": "Paused"}"#).0, 204);
    let diff = create.replace("Full", "Diff");
    let (code, body) = first.call("PUT", "/snapshot/create", &diff);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Diff snapshots are not supported"), "{body}");
    outputs_are_never_followed_nor_overwritten(&first);

    let started = Instant::now();
    let (code, body) = first.call("PUT", "/snapshot/create", &create);
    let create_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(code, 204, "{body}");
    assert!(!out_dir().join("vm-snapshot.mem.partial").exists());
    assert!(!out_dir().join("vm-snapshot.state.partial").exists());
    let before = first.serial();
    let reached = *counts(&before).last().unwrap();
    assert!(reached < STEPS, "the guest finished before the snapshot");
    // The old VMM is gone for good: the guest lives on only in the snapshot.
    drop(first);

    let mut second = Vmm::spawn("vm-snapshot-second", &[]);
    let load_ms = load_and_resume(&second, &state, &mem);
    let after = finished_without_restart(&mut second);
    assert!(after.contains("counter done"), "{after}");
    // The output of both VMMs together is one unbroken count (a line cut by the pause is
    // finished by the restored guest), continuing past where the snapshot was taken.
    let all = counts(&(before + &after));
    assert_eq!(all, (1..=STEPS).collect::<Vec<_>>(), "{after}");
    let first_after = counts(&after).first().copied().unwrap_or(STEPS);
    assert!(first_after > reached.saturating_sub(1), "{after}");
    eprintln!(
        "snapshot of a 128 MiB guest: create {create_ms:.1} ms, load {load_ms:.1} ms, memory file {} bytes, state file {} bytes",
        std::fs::metadata(&mem).unwrap().len(),
        std::fs::metadata(&state).unwrap().len()
    );
}

/// `name` in the output directory, with nothing left there (nor at its `.partial` name)
/// by an earlier run: snapshots are never written over existing files.
fn fresh(name: &str) -> PathBuf {
    let path = out_dir().join(name);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(out_dir().join(format!("{name}.partial")));
    path
}

/// The paused `vmm` refuses snapshot outputs where a file or a symlink already is (at the
/// final or the `.partial` name), and the file a symlink points to is left untouched.
fn outputs_are_never_followed_nor_overwritten(vmm: &Vmm) {
    let victim = fresh("vm-snapshot-victim");
    std::fs::write(&victim, b"precious").unwrap();
    let create = |state: &Path, mem: &Path| {
        let body = format!(
            r#"{{"snapshot_path": {:?}, "mem_file_path": {:?}}}"#,
            state.display().to_string(),
            mem.display().to_string()
        );
        vmm.call("PUT", "/snapshot/create", &body)
    };
    // A symlink at the state path, then at the memory path.
    let state = fresh("vm-snapshot-link.state");
    let mem = fresh("vm-snapshot-link.mem");
    std::os::unix::fs::symlink(&victim, &state).unwrap();
    let (code, body) = create(&state, &mem);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("already exists"), "{body}");
    assert!(!mem.exists());
    std::fs::remove_file(&state).unwrap();
    std::os::unix::fs::symlink(&victim, &mem).unwrap();
    let (code, body) = create(&state, &mem);
    assert_eq!(code, 400, "{body}");
    assert!(!state.exists());
    std::fs::remove_file(&mem).unwrap();
    // A symlink at the memory file's temporary name.
    let partial = out_dir().join("vm-snapshot-link.mem.partial");
    std::os::unix::fs::symlink(&victim, &partial).unwrap();
    let (code, body) = create(&state, &mem);
    assert_eq!(code, 400, "{body}");
    std::fs::remove_file(&partial).unwrap();
    // An existing regular file.
    std::fs::write(&state, b"old").unwrap();
    let (code, body) = create(&state, &mem);
    assert_eq!(code, 400, "{body}");
    assert_eq!(std::fs::read(&state).unwrap(), b"old");
    assert!(!mem.exists() && !state.with_extension("state.partial").exists());
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "victim changed"
    );
}

/// Pauses `vmm`, snapshots it into `name`.state / `name`.mem, and returns their paths.
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

#[test]
fn a_guest_keeps_using_its_virtio_blk_disk_after_restore() {
    let kernel = multiboot_guest(
        "counter_blk",
        &["multiboot_header.S", "counter_blk_guest.c"],
        "multiboot.ld",
    );
    let first = Vmm::spawn("vm-snapshot-blk-first", &[]);
    let disk = out_dir().join("vm-snapshot-blk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let drive = format!(
        r#"{{"drive_id": "data", "path_on_host": {:?}, "is_root_device": false, "is_read_only": false}}"#,
        disk.display().to_string()
    );
    let (code, body) = first.call("PUT", "/drives/data", &drive);
    assert_eq!(code, 204, "{body}");
    boot(&first, &kernel, 1, &format!("steps={STEPS} delay={DELAY}"));
    wait_for("the guest to count to 5", || {
        counts(&first.serial()).len() >= 5
    });
    let started = Instant::now();
    let (state, mem) = snapshot(&first, "vm-snapshot-blk");
    let create_ms = started.elapsed().as_secs_f64() * 1000.0;
    let before = first.serial();
    let reached = *counts(&before).last().unwrap();
    assert!(reached < STEPS, "the guest finished before the snapshot");
    drop(first);

    let mut second = Vmm::spawn("vm-snapshot-blk-second", &[]);
    let load_ms = load_and_resume(&second, &state, &mem);
    eprintln!(
        "snapshot of a 128 MiB guest with a virtio-blk disk: pause + create {create_ms:.1} ms, load {load_ms:.1} ms, state file {} bytes",
        std::fs::metadata(&state).unwrap().len()
    );
    let (status, err) = second.wait_exit(RUN_TIMEOUT);
    let after = second.serial();
    assert_eq!(
        status,
        Some(43),
        "stderr: {err}\nserial after restore: {after}"
    );
    assert!(after.contains("disk verified"), "{after}");
    assert!(
        !after.contains("counter guest up"),
        "the guest restarted: {after}"
    );
    let all = counts(&(before + &after));
    assert_eq!(all, (1..=STEPS).collect::<Vec<_>>(), "{after}");
    // Every sector the guest wrote, before and after the snapshot, is on the host's file.
    let image = std::fs::read(&disk).unwrap();
    for n in 1..=STEPS as usize {
        let sector = &image[n * 512..(n + 1) * 512];
        assert!(
            sector
                .chunks(4)
                .all(|w| u32::from_le_bytes(w.try_into().unwrap()) == n as u32),
            "sector {n}"
        );
    }
}

#[test]
fn snapshots_refuse_damaged_files() {
    // A truncated state file is refused with a reason; the VMM stays usable.
    let bad = out_dir().join("vm-snapshot-truncated.state");
    std::fs::write(
        &bad,
        br#"{"magic":"vessel-vm-snapshot","version":1,"machine":{"#,
    )
    .unwrap();
    let vmm = Vmm::spawn("vm-snapshot-bad", &[]);
    let load = format!(
        r#"{{"snapshot_path": {:?}, "mem_file_path": "/dev/null"}}"#,
        bad.display().to_string()
    );
    let (code, body) = vmm.call("PUT", "/snapshot/load", &load);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("invalid snapshot state file"), "{body}");
    let (code, body) = curl(&vmm.sock, "GET", "/", None);
    assert_eq!(code, 200);
    assert!(body.contains("Not started"), "{body}");
}

/// Both vCPUs of a 2-vCPU guest run when the snapshot is taken: after the load the BSP's
/// count goes on where it was and the AP goes on counting from its value (it neither
/// restarts nor stops).
#[test]
fn both_running_vcpus_of_an_smp_guest_go_on_after_restore() {
    let kernel = multiboot_guest(
        "counter_smp",
        &[
            "multiboot_header.S",
            "smp_trampoline.S",
            "counter_smp_guest.c",
        ],
        "multiboot.ld",
    );
    let first = Vmm::spawn("vm-snapshot-smp-first", &[]);
    boot(
        &first,
        &kernel,
        2,
        &format!("steps={SMP_STEPS} delay={SMP_DELAY}"),
    );
    wait_for("the guest to count to 4", || {
        counts(&first.serial()).len() >= 4
    });
    let (state, mem) = snapshot(&first, "vm-snapshot-smp");
    let before = first.serial();
    assert!(
        *counts(&before).last().unwrap() < SMP_STEPS,
        "finished too early"
    );
    let ap_before = *ap_counts(&before).last().unwrap();
    drop(first);

    let mut second = Vmm::spawn("vm-snapshot-smp-second", &[]);
    let load = format!(
        r#"{{"snapshot_path": {:?}, "mem_file_path": {:?}, "resume_vm": true}}"#,
        state.display().to_string(),
        mem.display().to_string()
    );
    let (code, body) = second.call("PUT", "/snapshot/load", &load);
    assert_eq!(code, 204, "{body}");
    let after = finished_without_restart(&mut second);
    let all = counts(&(before.clone() + &after));
    assert_eq!(all, (1..=SMP_STEPS).collect::<Vec<_>>(), "{after}");
    let ap = ap_counts(&(before + &after));
    assert!(
        ap.windows(2).all(|w| w[0] <= w[1]),
        "the AP count went back: {ap:?}"
    );
    let ap_after = ap_counts(&after);
    assert!(
        ap_after.first().is_some_and(|&first| first >= ap_before)
            && ap_after.last() > ap_after.first(),
        "the AP did not go on counting after the load: before {ap_before}, after {ap_after:?}"
    );
}

/// An interrupt-driven guest (PIT ticks through the PIC and LAPIC, keyboard IRQ, `hlt`
/// between them) on 2 vCPUs: loaded paused, resumed over the API, it still takes keyboard
/// interrupts and powers off on Ctrl-Alt-Del.
#[test]
fn a_halting_interrupt_driven_guest_takes_interrupts_after_a_paused_load() {
    let kernel = multiboot_guest(
        "service",
        &["multiboot_header.S", "service_guest.c"],
        "multiboot.ld",
    );
    let first = Vmm::spawn("vm-snapshot-service-first", &[]);
    assert_eq!(
        first
            .call(
                "PUT",
                "/machine-config",
                r#"{"vcpu_count": 2, "mem_size_mib": 128}"#
            )
            .0,
        204
    );
    let boot = format!(
        r#"{{"kernel_image_path": {:?}, "boot_args": "service"}}"#,
        kernel.display().to_string()
    );
    assert_eq!(first.call("PUT", "/boot-source", &boot).0, 204);
    let (code, body) = first.call("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    assert_eq!(code, 204, "{body}");
    wait_for("the service guest", || {
        first.serial().contains("service up")
    });
    // Let it take some PIT ticks, so a halted vCPU is kicked out of `hlt` for the snapshot.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(first.call("PATCH", "/vm", r#"{"state": "Paused"}"#).0, 204);
    let state = fresh("vm-snapshot-service.state");
    let mem = fresh("vm-snapshot-service.mem");
    let create = format!(
        r#"{{"snapshot_path": {:?}, "mem_file_path": {:?}}}"#,
        state.display().to_string(),
        mem.display().to_string()
    );
    let (code, body) = first.call("PUT", "/snapshot/create", &create);
    assert_eq!(code, 204, "{body}");
    drop(first);

    let mut second = Vmm::spawn("vm-snapshot-service-second", &[]);
    // The older body shape: mem_file_path instead of mem_backend; not resumed.
    let load = format!(
        r#"{{"snapshot_path": {:?}, "mem_file_path": {:?}}}"#,
        state.display().to_string(),
        mem.display().to_string()
    );
    let (code, body) = second.call("PUT", "/snapshot/load", &load);
    assert_eq!(code, 204, "{body}");
    let (_, info) = curl(&second.sock, "GET", "/", None);
    assert!(info.contains("\"state\":\"Paused\""), "{info}");
    let (_, machine) = curl(&second.sock, "GET", "/machine-config", None);
    assert!(machine.contains("\"vcpu_count\":2"), "{machine}");
    assert!(machine.contains("\"mem_size_mib\":128"), "{machine}");
    // Loaded means started: configuration and a second load are refused.
    let (code, _) = second.call("PUT", "/snapshot/load", &load);
    assert_eq!(code, 400);
    assert_eq!(
        second.call("PATCH", "/vm", r#"{"state": "Resumed"}"#).0,
        204
    );
    std::thread::sleep(Duration::from_millis(200));
    let (code, body) = second.call("PUT", "/actions", r#"{"action_type": "SendCtrlAltDel"}"#);
    assert_eq!(code, 204, "{body}");
    let (status, err) = second.wait_exit(RUN_TIMEOUT);
    let serial = second.serial();
    assert_eq!(status, Some(0), "stderr: {err}\nserial: {serial}");
    assert!(serial.contains("ctrl-alt-del: powering off"), "{serial}");
    assert!(
        !serial.contains("service up"),
        "the guest restarted: {serial}"
    );
}

/// The `machine` and `devices` sections of a state file.
fn machine_and_devices(state: &Path) -> (serde_json::Value, serde_json::Value) {
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    (json["machine"].take(), json["devices"].take())
}

/// Whether the process `pid` has `path` mapped.
fn maps_file(pid: u32, path: &Path) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let path = path.canonicalize().unwrap();
    maps.lines().any(|l| l.ends_with(path.to_str().unwrap()))
}

/// save → load → save gives the same memory file byte for byte, and the same machine and
/// device sections, whether the load maps the memory file (the default for a file of the
/// user's own) or copies it (`VESSEL_SNAPSHOT_MEMORY=copy`). A mapped load keeps the file
/// mapped and never writes it: after the guest ran on to its end, the file is unchanged.
#[test]
fn a_loaded_snapshot_saves_the_same_memory_again_mapped_or_copied() {
    let first = Vmm::spawn("vm-snapshot-again-first", &[]);
    boot_counter(&first, 1);
    wait_for("the guest to count to 3", || {
        counts(&first.serial()).len() >= 3
    });
    let (state1, mem1) = snapshot(&first, "vm-snapshot-again-1");
    drop(first);
    let saved = std::fs::read(&mem1).unwrap();
    for (env, name) in [(None, "mapped"), (Some("copy"), "copied")] {
        let env: Vec<_> = env
            .map(|v| ("VESSEL_SNAPSHOT_MEMORY", v))
            .into_iter()
            .collect();
        let mut second = Vmm::spawn_with_env(&format!("vm-snapshot-again-{name}"), &[], &env);
        let load = format!(
            r#"{{"snapshot_path": {:?}, "mem_file_path": {:?}}}"#,
            state1.display().to_string(),
            mem1.display().to_string()
        );
        let (code, body) = second.call("PUT", "/snapshot/load", &load);
        assert_eq!(code, 204, "{body}");
        assert_eq!(
            maps_file(second.child.id(), &mem1),
            env.is_empty(),
            "{name}"
        );
        let (state2, mem2) = snapshot(&second, &format!("vm-snapshot-again-{name}-2"));
        assert!(
            std::fs::read(&mem2).unwrap() == saved,
            "{name}: the memory files differ"
        );
        assert_eq!(
            machine_and_devices(&state1),
            machine_and_devices(&state2),
            "{name}"
        );
        if env.is_empty() {
            assert_eq!(
                second.call("PATCH", "/vm", r#"{"state": "Resumed"}"#).0,
                204
            );
            let after = finished_without_restart(&mut second);
            assert!(after.contains("counter done"), "{after}");
            assert!(
                std::fs::read(&mem1).unwrap() == saved,
                "the memory file was written"
            );
        }
    }
}
