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
    load(dir.path())
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
    assert!(err.contains("memory"), "{err}");
}

#[test]
fn unsupported_values_get_clear_errors() {
    let cases: Vec<Breaker> = vec![
        (|s| s["process"]["terminal"] = true.into(), "TTYs"),
        (
            |s| {
                s["linux"]["resources"]["cpu"] =
                    serde_json::json!({"quota": 50000, "period": 100000})
            },
            "CPU limits",
        ),
        (|s| s["root"]["readonly"] = true.into(), "read-only root"),
        (
            |s| s["hooks"] = serde_json::json!({"prestart": [{"path": "/x"}]}),
            "hooks",
        ),
        (
            |s| {
                s["mounts"].as_array_mut().unwrap().push(serde_json::json!(
                    {"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind"]}
                ))
            },
            "bind mounts",
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
    assert!(matches!(load(dir.path()), Err(SpecError::Read(..))));
    let f = std::fs::File::create(dir.path().join("config.json")).unwrap();
    f.set_len(MAX_SPEC + 1).unwrap();
    assert!(matches!(load(dir.path()), Err(SpecError::TooLarge(_))));
}

/// A change that breaks a valid value, and what the error must say.
type Breaker = (fn(&mut serde_json::Value), &'static str);
