//! MMDS, Firecracker's metadata service, through `vessel run --api-sock`: the document and
//! configuration over the API socket (curl, and the unmodified firecracker-python client).
//! A Linux guest reading it through virtio-net is in tests/nested/mmds.rs.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::api::{curl, ApiVmm};

#[test]
fn mmds_document_and_config_over_the_api_socket() {
    let vmm = ApiVmm::spawn("mmds-api", &["--mmds-size-limit".into(), "100".into()]);
    let sock = vmm.sock.clone();
    let call = |method: &str, path: &str, body: Option<&str>| curl(&sock, method, path, body);
    assert_eq!(call("GET", "/mmds", None), (200, "{}".into()));
    let (code, body) = call("PATCH", "/mmds", Some(r#"{"a": 1}"#));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("The MMDS data store is not initialized."),
        "{body}"
    );
    let doc = r#"{"latest": {"meta-data": {"ami-id": "ami-1", "tags": ["a", "b"]}}}"#;
    assert_eq!(call("PUT", "/mmds", Some(doc)).0, 204);
    let patch = r#"{"latest": {"meta-data": {"tags": null, "hostname": "h"}}}"#;
    assert_eq!(call("PATCH", "/mmds", Some(patch)).0, 204);
    let (code, body) = call("GET", "/mmds", None);
    assert_eq!(code, 200);
    let got: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        got,
        serde_json::json!({"latest": {"meta-data": {"ami-id": "ami-1", "hostname": "h"}}})
    );
    // Over --mmds-size-limit: 413, and the document is unchanged.
    let big = format!(r#"{{"big": "{}"}}"#, "x".repeat(100));
    let (code, body) = call("PATCH", "/mmds", Some(&big));
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("MMDS limit exceeded"), "{body}");
    assert_eq!(call("GET", "/mmds", None).1, got.to_string());
    for (config, needle) in [
        (r#"{"network_interfaces": ["eth0"]}"#, "does not correspond"),
        (r#"{"network_interfaces": []}"#, "is empty"),
        (r#"{"network_interfaces": ["eth0"], "version": "V3"}"#, "V3"),
        (r#"{"network_interfaces": ["eth0"], "other": 1}"#, "other"),
    ] {
        let (code, body) = call("PUT", "/mmds/config", Some(config));
        assert_eq!(code, 400, "{config}: {body}");
        assert!(body.contains(needle), "{config}: {body}");
    }
    let nic = r#"{"iface_id": "eth0", "mode": "internal", "network": "mmds-api"}"#;
    assert_eq!(call("PUT", "/network-interfaces/eth0", Some(nic)).0, 204);
    let (code, body) = call(
        "PUT",
        "/mmds/config",
        Some(r#"{"network_interfaces": ["eth0"], "ipv4_address": "169.254.0.9"}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not link local"), "{body}");
    let config = r#"{"version": "V2", "network_interfaces": ["eth0"], "imds_compat": true}"#;
    assert_eq!(call("PUT", "/mmds/config", Some(config)).0, 204);
    let (_, body) = call("GET", "/vm/config", None);
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        shown["mmds-config"],
        serde_json::json!({"version": "V2", "network_interfaces": ["eth0"],
            "ipv4_address": "169.254.169.254", "imds_compat": true})
    );
    assert_eq!(
        call("PUT", "/mmds/nope", Some("{}")).1,
        r#"{"fault_message":"Unrecognized PUT request path `nope`."}"#
    );
}

/// Where scripts/test.sh installs firecracker-python (`FCPY_PATH` overrides).
fn fcpy_path() -> PathBuf {
    std::env::var_os("FCPY_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fcpy"))
}

#[test]
fn firecracker_python_configures_mmds() {
    let site = fcpy_path();
    assert!(
        site.join("firecracker/api.py").exists(),
        "firecracker-python is not installed in {} (scripts/test.sh installs it)",
        site.display()
    );
    let vmm = ApiVmm::spawn("mmds-fcpy", &[]);
    let client = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/firecracker_python/mmds.py"
        ))
        .arg(&vmm.sock)
        .env("PYTHONPATH", &site)
        .output()
        .unwrap();
    drop(vmm);
    assert!(
        client.status.success(),
        "client: {}{}",
        String::from_utf8_lossy(&client.stdout),
        String::from_utf8_lossy(&client.stderr)
    );
    assert!(String::from_utf8_lossy(&client.stdout).contains("mmds: ok"));
}
