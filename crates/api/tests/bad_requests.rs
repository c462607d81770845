//! Every kind of bad request gets 400 with a fault message that says what is wrong, and the
//! server keeps answering afterwards (checked by `expect_fault` after each one).

mod common;

use common::TestServer;
use serde_json::json;

/// Each endpoint that takes a body, with a valid body for it.
fn endpoints_with_bodies(server: &TestServer) -> Vec<(&'static str, &'static str, String)> {
    vec![
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 2, "mem_size_mib": 256}).to_string(),
        ),
        (
            "PATCH",
            "/machine-config",
            json!({"vcpu_count": 2}).to_string(),
        ),
        (
            "PUT",
            "/boot-source",
            json!({"kernel_image_path": server.kernel}).to_string(),
        ),
        (
            "PUT",
            "/drives/rootfs",
            json!({"drive_id": "rootfs", "path_on_host": server.rootfs,
                   "is_root_device": true, "is_read_only": false})
            .to_string(),
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            json!({"iface_id": "eth0", "host_dev_name": "tap0"}).to_string(),
        ),
        (
            "PUT",
            "/actions",
            json!({"action_type": "FlushMetrics"}).to_string(),
        ),
        ("PATCH", "/vm", json!({"state": "Paused"}).to_string()),
    ]
}

#[test]
fn malformed_json_on_every_endpoint() {
    let server = TestServer::start();
    for (method, path, _) in endpoints_with_bodies(&server) {
        for body in ["{", "not json", "[1, 2", "{\"a\": }", "\u{1}"] {
            server.expect_fault(
                method,
                path,
                Some(body),
                "An error occurred when deserializing the json body of a request",
            );
        }
    }
}

#[test]
fn unknown_fields_on_every_endpoint() {
    let server = TestServer::start();
    for (method, path, body) in endpoints_with_bodies(&server) {
        let mut value: serde_json::Value = serde_json::from_str(&body).unwrap();
        value["surprise"] = json!(1);
        server.expect_fault(
            method,
            path,
            Some(&value.to_string()),
            "unknown field `surprise`",
        );
    }
    // Nested objects reject unknown fields too.
    let drive = json!({"drive_id": "d", "path_on_host": server.rootfs, "is_root_device": false,
                       "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1, "x": 2}}});
    server.expect_fault(
        "PUT",
        "/drives/d",
        Some(&drive.to_string()),
        "unknown field `x`",
    );
}

#[test]
fn wrong_types_are_named() {
    let server = TestServer::start();
    let cases = [
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": "2", "mem_size_mib": 128}),
            "invalid type: string \"2\", expected u8",
        ),
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 2, "mem_size_mib": -1}),
            "invalid value: integer `-1`",
        ),
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 300, "mem_size_mib": 128}),
            "invalid value: integer `300`, expected u8",
        ),
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 2.5, "mem_size_mib": 128}),
            "invalid type: floating point",
        ),
        (
            "PUT",
            "/boot-source",
            json!({"kernel_image_path": 7}),
            "invalid type: integer `7`, expected a string",
        ),
        (
            "PUT",
            "/drives/d",
            json!({"drive_id": "d", "path_on_host": "/x", "is_root_device": "yes"}),
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            "PUT",
            "/drives/d",
            json!({"drive_id": "d", "path_on_host": "/x", "is_root_device": false, "cache_type": "Fast"}),
            "unknown variant `Fast`",
        ),
        (
            "PUT",
            "/drives/d",
            json!({"drive_id": "d", "path_on_host": "/x", "is_root_device": false, "format": "iso"}),
            "unknown variant `iso`",
        ),
        (
            "PUT",
            "/network-interfaces/e",
            json!({"iface_id": "e", "mode": "bridge"}),
            "unknown variant `bridge`",
        ),
        (
            "PUT",
            "/actions",
            json!({"action_type": "Reboot"}),
            "unknown variant `Reboot`",
        ),
        (
            "PUT",
            "/actions",
            json!({"action_type": 1}),
            "expected value at line 1 column 16",
        ),
        (
            "PATCH",
            "/vm",
            json!({"state": "Stopped"}),
            "unknown variant `Stopped`",
        ),
        (
            "PUT",
            "/actions",
            json!(["InstanceStart"]),
            "The request body must be a JSON object.",
        ),
        (
            "PUT",
            "/network-interfaces/e",
            json!({"iface_id": "e", "host_dev_name": "tap0", "tx_rate_limiter": [null, null]}),
            "The request body cannot contain arrays",
        ),
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": null}),
            "invalid type: null, expected a boolean",
        ),
        (
            "PATCH",
            "/vm",
            json!("Paused"),
            "The request body must be a JSON object.",
        ),
    ];
    for (method, path, body, needle) in cases {
        let response = server.request(method, path, Some(&body.to_string()));
        assert_eq!(response.status, 400, "{path} {body}");
        let message = response.fault_message();
        assert!(
            message.contains(needle),
            "{path} {body}: {message:?} lacks {needle:?}"
        );
    }
    assert_eq!(server.request("GET", "/", None).status, 200);
}

#[test]
fn missing_fields_are_named() {
    let server = TestServer::start();
    let cases = [
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 2}),
            "missing field `mem_size_mib`",
        ),
        (
            "PUT",
            "/machine-config",
            json!({"mem_size_mib": 2}),
            "missing field `vcpu_count`",
        ),
        (
            "PUT",
            "/boot-source",
            json!({"boot_args": "quiet"}),
            "missing field `kernel_image_path`",
        ),
        (
            "PUT",
            "/drives/d",
            json!({"drive_id": "d", "is_root_device": true}),
            "missing field `path_on_host`",
        ),
        (
            "PUT",
            "/drives/d",
            json!({"drive_id": "d", "path_on_host": "/x"}),
            "missing field `is_root_device`",
        ),
        (
            "PUT",
            "/network-interfaces/e",
            json!({"host_dev_name": "tap0"}),
            "missing field `iface_id`",
        ),
        ("PUT", "/actions", json!({}), "missing field `action_type`"),
        ("PATCH", "/vm", json!({}), "missing field `state`"),
        (
            "PUT",
            "/drives/d",
            json!({"drive_id": "d", "path_on_host": "/x", "is_root_device": false, "rate_limiter": {"ops": {"size": 1}}}),
            "missing field `refill_time`",
        ),
    ];
    for (method, path, body, needle) in cases {
        server.expect_fault(method, path, Some(&body.to_string()), needle);
    }
}

#[test]
fn invalid_values_are_explained() {
    let server = TestServer::start();
    let missing = server
        .dir
        .path()
        .join("missing")
        .to_str()
        .unwrap()
        .to_string();
    let cases = [
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 0, "mem_size_mib": 128}),
            "vcpu_count must be between 1 and 254, got 0",
        ),
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 255, "mem_size_mib": 128}),
            "vcpu_count must be between 1 and 254, got 255",
        ),
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 1, "mem_size_mib": 1}),
            "mem_size_mib must be between 2 and",
        ),
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 2, "mem_size_mib": 128, "smt": true}),
            "smt",
        ),
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 2, "mem_size_mib": 128, "track_dirty_pages": true}),
            "track_dirty_pages",
        ),
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 2, "mem_size_mib": 128, "cpu_template": "T2"}),
            "cpu_template must be \"None\"",
        ),
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 2, "mem_size_mib": 128, "huge_pages": "2M"}),
            "huge_pages",
        ),
        (
            "PATCH",
            "/machine-config",
            json!({"mem_size_mib": 0}),
            "mem_size_mib must be between",
        ),
        (
            "PUT",
            "/boot-source",
            json!({"kernel_image_path": missing}),
            "The kernel file cannot be opened",
        ),
        (
            "PUT",
            "/boot-source",
            json!({"kernel_image_path": ""}),
            "kernel_image_path cannot be empty",
        ),
        (
            "PUT",
            "/boot-source",
            json!({"kernel_image_path": server.kernel, "initrd_path": missing}),
            "The initrd file cannot be opened",
        ),
        (
            "PUT",
            "/drives/d",
            json!({"drive_id": "d", "path_on_host": missing, "is_root_device": false}),
            "Unable to open the drive file",
        ),
        (
            "PUT",
            "/network-interfaces/e",
            json!({"iface_id": "e"}),
            "host_dev_name is required",
        ),
        (
            "PUT",
            "/network-interfaces/e",
            json!({"iface_id": "e", "host_dev_name": "tap0", "guest_mac": "06:00"}),
            "Invalid guest_mac",
        ),
        (
            "PUT",
            "/network-interfaces/e",
            json!({"iface_id": "e", "host_dev_name": "a/b"}),
            "Invalid host_dev_name",
        ),
        (
            "PUT",
            "/network-interfaces/e",
            json!({"iface_id": "e", "mode": "nat", "host_dev_name": "tap0"}),
            "only for a network interface in tap mode",
        ),
    ];
    for (method, path, body, needle) in cases {
        server.expect_fault(method, path, Some(&body.to_string()), needle);
    }
    // None of them changed the configuration.
    let config = server.request("GET", "/vm/config", None).json();
    assert_eq!(config["machine-config"]["vcpu_count"], 1);
    assert!(config.get("boot-source").is_none());
    assert_eq!(config["drives"], json!([]));
    assert_eq!(config["network-interfaces"], json!([]));
}

#[test]
fn path_ids_must_be_valid_and_match_the_body() {
    let server = TestServer::start();
    let drive =
        json!({"drive_id": "rootfs", "path_on_host": server.rootfs, "is_root_device": true});
    let body = drive.to_string();
    server.expect_fault(
        "PUT",
        "/drives/other",
        Some(&body),
        "The id from the path does not match the id from the body!",
    );
    server.expect_fault("PUT", "/drives/", Some(&body), "The ID cannot be empty.");
    server.expect_fault(
        "PUT",
        "/drives/bad-id",
        Some(&body),
        "alphanumeric characters and underscores",
    );
    let net = json!({"iface_id": "eth0", "host_dev_name": "tap0"}).to_string();
    server.expect_fault(
        "PUT",
        "/network-interfaces/eth1",
        Some(&net),
        "does not match",
    );
    server.expect_fault(
        "PUT",
        "/network-interfaces",
        Some(&net),
        "The ID cannot be empty.",
    );
}

#[test]
fn unknown_paths_and_methods() {
    let server = TestServer::start();
    let invalid = "Invalid request method and/or path";
    server.expect_fault(
        "GET",
        "/nope",
        None,
        "Invalid request method and/or path: GET /nope.",
    );
    server.expect_fault("DELETE", "/", None, invalid);
    server.expect_fault(
        "POST",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
        invalid,
    );
    server.expect_fault("PUT", "/vm", Some(r#"{"state": "Paused"}"#), invalid);
    server.expect_fault("PATCH", "/boot-source", Some("{}"), invalid);
    server.expect_fault("PUT", "/snapshot/merge", Some("{}"), invalid);
    server.expect_fault("GET", "/snapshot/create", None, invalid);
    // Snapshot routes exist; their bodies are checked like every other.
    server.expect_fault(
        "PUT",
        "/snapshot/create",
        Some("{}"),
        "missing field `snapshot_path`",
    );
    server.expect_fault("GET", "/vm/config/more", None, invalid);
    server.expect_fault(
        "GET",
        "/machine-config",
        Some("{}"),
        "GET request cannot have a body.",
    );
    server.expect_fault("PUT", "/actions", None, "Empty PUT request.");
    server.expect_fault("PATCH", "/vm", None, "Empty PATCH request.");
    // A query string does not change the route.
    assert_eq!(server.request("GET", "/version?x=1", None).status, 200);
}

#[test]
fn wrong_state_calls() {
    let server = TestServer::start();
    let pre_boot = "The requested operation is not supported before starting the microVM.";
    server.expect_fault(
        "PUT",
        "/actions",
        Some(r#"{"action_type": "SendCtrlAltDel"}"#),
        pre_boot,
    );
    server.expect_fault("PATCH", "/vm", Some(r#"{"state": "Paused"}"#), pre_boot);
    server.expect_fault("PATCH", "/vm", Some(r#"{"state": "Resumed"}"#), pre_boot);
    server.expect_fault(
        "PUT",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
        "Cannot start microvm without kernel configuration.",
    );
    server.expect_fault(
        "PUT",
        "/actions",
        Some(r#"{"action_type": "FlushMetrics"}"#),
        "No metrics sink",
    );
    assert!(server.backend.calls().is_empty());
    assert_eq!(server.state(), "Not started");

    let boot = json!({"kernel_image_path": server.kernel}).to_string();
    server.expect_no_content("PUT", "/boot-source", &boot);
    server.expect_no_content("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);

    let post_boot = "The requested operation is not supported after starting the microVM.";
    for (method, path, body) in endpoints_with_bodies(&server) {
        if path == "/actions" || path == "/vm" {
            continue;
        }
        server.expect_fault(method, path, Some(&body), post_boot);
    }
    server.expect_fault(
        "PUT",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
        post_boot,
    );
    assert_eq!(server.backend.calls(), ["start"]);
    assert_eq!(server.state(), "Running");
}

#[test]
fn backend_failures_become_faults_and_leave_state_alone() {
    let server = TestServer::start();
    server.backend.fail_calls.lock().unwrap().push("start");
    let boot = json!({"kernel_image_path": server.kernel}).to_string();
    server.expect_no_content("PUT", "/boot-source", &boot);
    server.expect_fault(
        "PUT",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
        "Failed to start the microVM: mock backend refused start",
    );
    assert_eq!(server.state(), "Not started");
    server.backend.fail_calls.lock().unwrap().clear();
    server.backend.fail_calls.lock().unwrap().push("pause");
    server.expect_no_content("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    server.expect_fault(
        "PATCH",
        "/vm",
        Some(r#"{"state": "Paused"}"#),
        "Failed to pause the microVM: mock backend refused pause",
    );
    assert_eq!(server.state(), "Running");
}

#[test]
fn conflicting_devices_are_refused() {
    let server = TestServer::start();
    let root = |id: &str| {
        json!({"drive_id": id, "path_on_host": server.rootfs, "is_root_device": true}).to_string()
    };
    server.expect_no_content("PUT", "/drives/root_a", &root("root_a"));
    server.expect_fault(
        "PUT",
        "/drives/root_b",
        Some(&root("root_b")),
        "A root block device already exists!",
    );
    let tap = |id: &str, mac: &str| {
        json!({"iface_id": id, "host_dev_name": format!("tap_{id}"), "guest_mac": mac}).to_string()
    };
    server.expect_no_content(
        "PUT",
        "/network-interfaces/a",
        &tap("a", "06:00:00:00:00:01"),
    );
    server.expect_fault(
        "PUT",
        "/network-interfaces/b",
        Some(&tap("b", "06:00:00:00:00:01")),
        "The MAC address is already in use",
    );
    let same_dev = json!({"iface_id": "c", "host_dev_name": "tap_a"}).to_string();
    server.expect_fault(
        "PUT",
        "/network-interfaces/c",
        Some(&same_dev),
        "The host device name tap_a is already in use.",
    );
}
