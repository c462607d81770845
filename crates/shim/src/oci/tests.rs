//! The spec ctr generates (`ctr oci spec` of containerd 1.6, in ctr-default-spec.json), and
//! the fields and values the runtime refuses.

use super::*;

const CTR_DEFAULT: &str = include_str!("ctr-default-spec.json");

fn ctr_spec() -> serde_json::Value {
    let mut spec: serde_json::Value = serde_json::from_str(CTR_DEFAULT).unwrap();
    spec["process"]["args"] = serde_json::json!(["/bin/sh", "-c", "echo hi; exit 3"]);
    spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
    spec
}

fn load_value(spec: &serde_json::Value) -> Result<BundleSpec, SpecError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
    load(dir.path(), "c1")
}

#[test]
fn ctrs_default_spec_is_accepted() {
    let mut spec = ctr_spec();
    spec["linux"]["resources"]["cpu"] = serde_json::json!({"shares": 1024, "quota": -1});
    let b = load_value(&spec).unwrap();
    let c = &b.container;
    assert_eq!(c.process.args, ["/bin/sh", "-c", "echo hi; exit 3"]);
    assert_eq!(c.process.cwd, "/");
    assert!(c.process.no_new_privileges);
    assert_eq!(c.process.rlimits[0].resource, "RLIMIT_NOFILE");
    assert!(c
        .mounts
        .iter()
        .any(|m| m.destination == "/proc" && m.fstype == "proc"));
    assert!(c.masked_paths.iter().any(|p| p == "/proc/kcore"));
    assert!(b.root.ends_with("rootfs"));
}

#[test]
fn unknown_fields_are_refused_by_name() {
    let mut spec = ctr_spec();
    spec["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO"});
    let err = load_value(&spec).unwrap_err().to_string();
    assert!(
        err.contains("seccomp") && err.contains("not support"),
        "{err}"
    );
    let mut spec = ctr_spec();
    spec["linux"]["resources"]["memory"] = serde_json::json!({"limit": 1});
    let err = load_value(&spec).unwrap_err().to_string();
    assert!(err.contains("1 MiB"), "{err}");
    spec["linux"]["resources"]["memory"] = serde_json::json!({});
    assert_eq!(load_value(&spec).unwrap().container.limits, None);
    spec["linux"]["resources"]["memory"] = serde_json::json!({"limit": 100 << 20});
    let limits = load_value(&spec).unwrap().container.limits.unwrap();
    assert_eq!(limits.memory_max, Some(100 << 20));
    spec["linux"]["resources"]["memory"] = serde_json::json!({"kernel": 1});
    let err = load_value(&spec).unwrap_err().to_string();
    assert!(err.contains("kernel"), "{err}");
}

#[test]
fn unsupported_values_get_clear_errors() {
    let cases: Vec<Breaker> = vec![
        (
            |s| s["linux"]["resources"]["cpu"] = serde_json::json!({"cpus": "0-3"}),
            "cpusets",
        ),
        (
            |s| s["hooks"] = serde_json::json!({"prestart": [{"path": "/x"}]}),
            "hooks",
        ),
        (
            |s| {
                s["mounts"].as_array_mut().unwrap().push(serde_json::json!(
                    {"destination": "/data", "type": "bind", "source": "/dev/null", "options": ["rbind"]}
                ))
            },
            "binds of anything else",
        ),
        (
            |s| s["process"]["args"] = serde_json::json!([]),
            "args is empty",
        ),
        (|s| s["process"]["cwd"] = "tmp".into(), "not absolute"),
        (
            |s| {
                s.as_object_mut()
                    .unwrap()
                    .remove("process")
                    .map(drop)
                    .unwrap_or(())
            },
            "no process",
        ),
        (|s| s["process"]["user"]["uid"] = (-1).into(), "config.json"),
    ];
    for (break_it, expect) in cases {
        let mut spec = ctr_spec();
        break_it(&mut spec);
        let err = load_value(&spec).unwrap_err().to_string();
        assert!(err.contains(expect), "{err} (expected {expect})");
    }
}

#[test]
fn a_huge_or_missing_config_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(load(dir.path(), "c1"), Err(SpecError::Read(..))));
    let f = std::fs::File::create(dir.path().join("config.json")).unwrap();
    f.set_len(MAX_SPEC + 1).unwrap();
    assert!(matches!(
        load(dir.path(), "c1"),
        Err(SpecError::TooLarge(_))
    ));
}

/// A change that breaks a valid value, and what the error must say.
type Breaker = (fn(&mut serde_json::Value), &'static str);

#[test]
fn an_execs_process_is_checked_as_the_containers_is() {
    let mut process = ctr_spec()["process"].clone();
    process["args"] = serde_json::json!(["sh", "-c", "echo exec"]);
    let p = exec_process(process.to_string().as_bytes()).unwrap();
    assert_eq!(p.args, ["sh", "-c", "echo exec"]);
    assert!(p.no_new_privileges);
    assert!(!p.terminal);
    let mut tty = process.clone();
    tty["terminal"] = serde_json::json!(true);
    assert!(exec_process(tty.to_string().as_bytes()).unwrap().terminal);
    let mut unknown = process.clone();
    unknown["ioPriority"] = serde_json::json!({"class": "IOPRIO_CLASS_IDLE"});
    let err = exec_process(unknown.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("ioPriority"), "{err}");
    let mut oom = process.clone();
    oom["oomScoreAdj"] = serde_json::json!(5);
    let p = exec_process(oom.to_string().as_bytes()).unwrap();
    assert_eq!(p.oom_score_adj, Some(5));
    oom["oomScoreAdj"] = serde_json::json!(5000);
    assert!(exec_process(oom.to_string().as_bytes()).is_err());
    let mut empty = process.clone();
    empty["args"] = serde_json::json!([]);
    assert!(exec_process(empty.to_string().as_bytes()).is_err());
    assert!(exec_process(b"not json").is_err());
    assert!(exec_process(&vec![b' '; (MAX_SPEC + 1) as usize]).is_err());
}

#[test]
fn cris_annotations_place_a_container_alone_as_a_sandbox_or_in_its_pod() {
    let with = |annotations: serde_json::Value| {
        let mut spec = ctr_spec();
        spec["annotations"] = annotations;
        load_value(&spec)
    };
    assert_eq!(with(serde_json::json!({})).unwrap().pod, PodRole::Alone);
    let sandbox = serde_json::json!({
        CONTAINER_TYPE: "sandbox", SANDBOX_ID: "abc"
    });
    assert_eq!(with(sandbox).unwrap().pod, PodRole::Sandbox);
    let member = serde_json::json!({
        CONTAINER_TYPE: "container", SANDBOX_ID: "abc"
    });
    let sandbox = "abc".to_string();
    assert_eq!(with(member).unwrap().pod, PodRole::Member { sandbox });
    for bad in [
        serde_json::json!({ CONTAINER_TYPE: "container" }),
        serde_json::json!({ CONTAINER_TYPE: "container", SANDBOX_ID: "../x" }),
        serde_json::json!({ CONTAINER_TYPE: "vm", SANDBOX_ID: "abc" }),
    ] {
        let err = with(bad.clone()).unwrap_err().to_string();
        assert!(err.contains(CONTAINER_TYPE), "{bad}: {err}");
    }
}

#[test]
fn the_shims_grouping_reads_only_the_sandbox_annotation() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(sandbox_id(dir.path()), None, "no config.json");
    let write = |v: &str| std::fs::write(dir.path().join("config.json"), v).unwrap();
    // Fields Create would refuse do not matter here.
    write(r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"},"bogus":1}"#);
    assert_eq!(sandbox_id(dir.path()).as_deref(), Some("pod1"));
    write(r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"../../etc"}}"#);
    assert_eq!(sandbox_id(dir.path()), None, "not an id");
    write("not json");
    assert_eq!(sandbox_id(dir.path()), None);
}

#[test]
fn the_specs_containerds_cri_writes_are_accepted() {
    // As containerd 1.6's CRI writes them for a pod's sandbox (host network): a read-only
    // root, an oom_score_adj, the sandbox's shm directory bound over /dev/shm.
    let dir = tempfile::tempdir().unwrap();
    let shm = dir
        .path()
        .join("s/io.containerd.grpc.v1.cri/sandboxes/abc/shm");
    std::fs::create_dir_all(&shm).unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, b"nameserver 10.0.2.3\n").unwrap();
    let mut spec = ctr_spec();
    spec["root"]["readonly"] = true.into();
    spec["process"]["oomScoreAdj"] = serde_json::json!(-998);
    spec["linux"]["cgroupsPath"] = "/k8s.io/abc".into();
    spec["linux"]["namespaces"] = serde_json::json!([
        {"type": "ipc", "path": "/proc/1/ns/ipc"},
        {"type": "network", "path": "/run/netns/cni-1234"},
        {"type": "mount"}
    ]);
    spec["annotations"] = serde_json::json!({CONTAINER_TYPE: "sandbox", SANDBOX_ID: "abc"});
    let mounts = spec["mounts"].as_array_mut().unwrap();
    mounts.push(
        serde_json::json!({"destination": "/dev/shm", "type": "bind",
        "source": shm, "options": ["rbind", "ro"]}),
    );
    mounts.push(
        serde_json::json!({"destination": "/etc/resolv.conf", "type": "bind",
        "source": resolv, "options": ["rbind", "ro"]}),
    );
    let b = load_value(&spec).unwrap();
    assert!(b.container.readonly_root);
    assert_eq!(b.container.process.oom_score_adj, Some(-998));
    let shm = b.container.mounts.last().unwrap();
    assert_eq!(
        (shm.fstype.as_str(), shm.options.as_slice()),
        ("pod-shm", &["ro".to_string()][..])
    );
    assert_eq!(b.container.files[0].destination, "/etc/resolv.conf");
    assert!(b.container.files[0].readonly);
    assert_eq!(b.pod, PodRole::Sandbox);
    assert_eq!(b.netns.as_deref(), Some(Path::new("/run/netns/cni-1234")));
}

#[test]
fn a_network_namespace_is_a_path_or_none() {
    let with = |namespaces: serde_json::Value| {
        let mut spec = ctr_spec();
        spec["linux"]["namespaces"] = namespaces;
        load_value(&spec).map(|b| b.netns)
    };
    assert_eq!(
        with(serde_json::json!([{"type": "network"}])).unwrap(),
        None
    );
    assert_eq!(with(serde_json::json!([])).unwrap(), None);
    for bad in [
        serde_json::json!([{"type": "network", "path": "relative"}]),
        serde_json::json!([{"type": "network", "path": 5}]),
        serde_json::json!({"type": "network"}),
    ] {
        assert!(with(bad.clone()).is_err(), "{bad}");
    }
}
