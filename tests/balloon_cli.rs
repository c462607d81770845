//! The balloon from the command line: `vessel validate` checks `[balloon]`, `vessel run
//! --balloon` refuses bad specs, and `vessel memory` sets and shows the balloon of a VM
//! started in the background, with clear errors for a stopped VM and a VM without one.
//! (The guest here has no balloon driver: the nested Debian test in tests/nested/balloon.rs shows a
//! real driver giving memory back.)

mod common;

use std::path::{Path, PathBuf};

use common::state_dir::TestState as State;
use common::{multiboot_guest, out_dir, vessel, TIMEOUT};

fn service_guest() -> PathBuf {
    multiboot_guest(
        "service",
        &["multiboot_header.S", "service_guest.c"],
        "multiboot.ld",
    )
}

fn definition(name: &str, kernel: &Path, extra: &str) -> PathBuf {
    let file = out_dir().join(format!("{name}.vm.toml"));
    std::fs::write(
        &file,
        format!("name = \"{name}\"\ncpus = 1\nmemory = \"64M\"\n\n[boot]\nkernel = {kernel:?}\ncmdline = \"service\"\n{extra}"),
    )
    .unwrap();
    file
}

#[test]
fn validate_and_run_refuse_bad_balloons() {
    let kernel = service_guest();
    let file = definition(
        "bad-balloon",
        &kernel,
        "\n[balloon]\namount_mib = 65\nstats_polling_interval_s = 70000\n",
    );
    let r = vessel(&["validate", file.to_str().unwrap()], TIMEOUT);
    assert_eq!(r.status, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("balloon amount_mib 65"), "{}", r.stderr);
    assert!(
        r.stderr.contains("stats_polling_interval_s 70000"),
        "{}",
        r.stderr
    );
    let file = definition("good-balloon", &kernel, "\n[balloon]\namount_mib = 16\n");
    vessel(&["validate", file.to_str().unwrap()], TIMEOUT).expect_status(0);

    let k = kernel.to_str().unwrap();
    let r = vessel(
        &["run", "--kernel", k, "--balloon", "deflate_on_oom=on"],
        TIMEOUT,
    );
    assert_eq!(r.status, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("amount_mib=N is needed"), "{}", r.stderr);
    let r = vessel(
        &[
            "run",
            "--kernel",
            k,
            "--memory",
            "32M",
            "--balloon",
            "amount_mib=64",
        ],
        TIMEOUT,
    );
    assert_eq!(r.status, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("Requested memory should be less than 32MiB"),
        "{}",
        r.stderr
    );
}

#[test]
fn memory_sets_the_balloon_of_a_started_vm() {
    let st = State::new("balloon-memory");
    let kernel = service_guest();
    let with = definition(
        "ballooned",
        &kernel,
        "\n[balloon]\namount_mib = 8\nstats_polling_interval_s = 1\n",
    );
    let without = definition("plain", &kernel, "");
    st.ok(&["create", "ballooned", "--from", with.to_str().unwrap()]);
    st.ok(&["create", "plain", "--from", without.to_str().unwrap()]);

    let r = st.vessel(&["memory", "ballooned", "--target", "32M"]);
    assert_eq!(r.status, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("is not running"), "{}", r.stderr);

    st.ok(&["start", "ballooned", "--no-provision"]);
    st.ok(&["start", "plain", "--no-provision"]);
    let r = st.vessel(&["memory", "plain", "--target", "32M"]);
    assert_eq!(r.status, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("has no balloon"), "{}", r.stderr);

    let shown: serde_json::Value =
        serde_json::from_str(&st.ok(&["memory", "ballooned", "--json"])).unwrap();
    assert_eq!(shown["memory_mib"], 64, "{shown}");
    assert_eq!(shown["balloon_target_mib"], 8, "{shown}");
    assert_eq!(shown["target_mib"], 56, "{shown}");
    // No driver in this guest: the balloon holds nothing.
    assert_eq!(shown["balloon_actual_mib"], 0, "{shown}");

    let set: serde_json::Value =
        serde_json::from_str(&st.ok(&["memory", "ballooned", "--target", "40M", "--json"]))
            .unwrap();
    assert_eq!(set["balloon_target_mib"], 24, "{set}");
    assert_eq!(set["target_mib"], 40, "{set}");
    let table = st.ok(&["memory", "ballooned"]);
    assert!(table.contains("balloon target   24 MiB"), "{table}");
    for bad in ["0M", "128M"] {
        let r = st.vessel(&["memory", "ballooned", "--target", bad]);
        assert_eq!(r.status, Some(2), "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("--target must be"), "{}", r.stderr);
    }
    st.ok(&["stop", "ballooned", "--force"]);
    st.ok(&["stop", "plain", "--force"]);
}

/// With `[balloon.dynamic]` the balloon follows the guest's use: `vessel memory` shows the
/// policy and refuses a target by hand, and so does the API's PATCH /balloon.
#[test]
fn dynamic_memory_owns_the_balloon_of_a_started_vm() {
    let st = State::new("balloon-dynamic");
    let kernel = service_guest();
    let file = definition(
        "dynamic",
        &kernel,
        "\n[balloon]\namount_mib = 0\nstats_polling_interval_s = 1\n\n[balloon.dynamic]\nmin_mib = 32\n",
    );
    vessel(&["validate", file.to_str().unwrap()], TIMEOUT).expect_status(0);
    st.ok(&["create", "dynamic", "--from", file.to_str().unwrap()]);
    st.ok(&["start", "dynamic", "--no-provision"]);

    let shown: serde_json::Value =
        serde_json::from_str(&st.ok(&["memory", "dynamic", "--json"])).unwrap();
    assert_eq!(shown["dynamic"]["min_mib"], 32, "{shown}");
    assert_eq!(shown["dynamic"]["buffer_percent"], 20, "{shown}");
    let table = st.ok(&["memory", "dynamic"]);
    assert!(
        table.contains("dynamic memory   at least 32 MiB, 20 % buffer, shrinks after 30 s"),
        "{table}"
    );
    let r = st.vessel(&["memory", "dynamic", "--target", "40M"]);
    assert_eq!(r.status, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("has dynamic memory"), "{}", r.stderr);
    let sock = st.0.join("dynamic").join("api.sock");
    let (code, body) = common::api::curl(&sock, "PATCH", "/balloon", Some(r#"{"amount_mib": 16}"#));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("dynamic memory"), "{body}");
    st.ok(&["stop", "dynamic", "--force"]);

    let bad = definition(
        "dynamic-bad",
        &kernel,
        "\n[balloon]\namount_mib = 0\n\n[balloon.dynamic]\nmin_mib = 128\n",
    );
    let r = vessel(&["validate", bad.to_str().unwrap()], TIMEOUT);
    assert_eq!(r.status, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("set stats_polling_interval_s"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("dynamic min_mib 128"), "{}", r.stderr);
}
