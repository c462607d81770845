//! Confinement against a guest-reachable path (needs `--features test-hooks`, which adds a
//! debug hook on port 0x5e5 to the VMM; release builds never have it): a forbidden system
//! call stops the VMM with the call named, and landlock refuses a file outside the VM's set.

mod common;

use std::process::Command;

use common::multiboot_guest;

fn run_hook(hook: &str, extra: &[&str]) -> (Option<i32>, String) {
    let k = multiboot_guest("hook", &["hook.S"], "multiboot.ld");
    let out = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(["run", "--kernel", k.to_str().unwrap(), "--memory", "16M"])
        .args(extra)
        .env("VESSEL_TEST_HOOK", hook)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_forbidden_system_call_on_a_vcpu_stops_the_vmm_naming_it() {
    let (code, err) = run_hook("syscall", &[]);
    assert_eq!(code, Some(159), "{err}");
    assert!(
        err.contains("the vCPU thread attempted the forbidden system call personality (135)"),
        "{err}"
    );
    // The same guest runs to its debug exit without the filter.
    let (code, err) = run_hook("syscall", &["--seccomp=off"]);
    assert_eq!(code, Some(11), "{err}");
    // In log mode the call is allowed (and logged by the kernel).
    let (code, err) = run_hook("syscall", &["--seccomp=log"]);
    assert_eq!(code, Some(11), "{err}");
}

#[test]
fn landlock_refuses_a_file_outside_the_vms_set() {
    let outside = std::env::temp_dir().join(format!("vessel-outside-{}", std::process::id()));
    std::fs::write(&outside, b"secret").unwrap();
    let hook = format!("open:{}", outside.display());
    // seccomp off so that the open reaches landlock (seccomp forbids openat on vCPUs).
    let (code, err) = run_hook(&hook, &["--seccomp=off"]);
    assert_eq!(code, Some(11), "{err}");
    assert!(
        err.contains(&format!(
            "cannot open {}: Permission denied",
            outside.display()
        )),
        "{err}"
    );
    let (code, err) = run_hook(&hook, &["--seccomp=off", "--landlock=off"]);
    assert_eq!(code, Some(11), "{err}");
    assert!(
        err.contains(&format!("opened {}", outside.display())),
        "{err}"
    );
    // With both on, seccomp refuses the open first (vCPUs open nothing: EACCES).
    let (code, err) = run_hook(&hook, &["--landlock=off"]);
    assert_eq!(code, Some(11), "{err}");
    assert!(
        err.contains(&format!(
            "cannot open {}: Permission denied",
            outside.display()
        )),
        "{err}"
    );
    let _ = std::fs::remove_file(&outside);
}
