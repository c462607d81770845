//! Every endpoint's success path over a real unix socket, and whole client sequences as
//! Firecracker clients send them.

mod common;

use std::process::Command;

use api::{CacheType, DriveFormat, InstanceState, IoEngine, NetworkMode};
use common::TestServer;
use serde_json::json;

#[test]
fn get_instance_info_before_start() {
    let server = TestServer::start();
    let response = server.request("GET", "/", None);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.json(),
        json!({"id": "anonymous-instance", "state": "Not started",
               "vmm_version": env!("CARGO_PKG_VERSION"), "app_name": "vessel"})
    );
}

#[test]
fn instance_identity_comes_from_options() {
    let options = api::ServerOptions {
        identity: api::InstanceIdentity {
            id: "vm42".into(),
            vmm_version: "9.8.7".into(),
            app_name: "vessel".into(),
        },
        ..api::ServerOptions::default()
    };
    let server = TestServer::start_with(options);
    let info = server.request("GET", "/", None).json();
    assert_eq!(info["id"], "vm42");
    assert_eq!(info["vmm_version"], "9.8.7");
    let version = server.request("GET", "/version", None);
    assert_eq!(version.status, 200);
    assert_eq!(
        version.json(),
        json!({"firecracker_version": "9.8.7", "vmm_version": "9.8.7"})
    );
}

#[test]
fn machine_config_put_get_patch() {
    let server = TestServer::start();
    let defaults = server.request("GET", "/machine-config", None);
    assert_eq!(defaults.status, 200);
    assert_eq!(
        defaults.json(),
        json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false,
               "track_dirty_pages": false, "huge_pages": "None"})
    );
    server.expect_no_content(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 4, "mem_size_mib": 1024, "smt": false, "track_dirty_pages": false,
            "cpu_template": "None", "huge_pages": "None"}"#,
    );
    let got = server.request("GET", "/machine-config", None).json();
    assert_eq!(got["vcpu_count"], 4);
    assert_eq!(got["mem_size_mib"], 1024);
    assert_eq!(got["cpu_template"], "None");
    server.expect_no_content("PATCH", "/machine-config", r#"{"mem_size_mib": 2048}"#);
    let got = server.request("GET", "/machine-config", None).json();
    assert_eq!(got["vcpu_count"], 4);
    assert_eq!(got["mem_size_mib"], 2048);
    // The largest vCPU count vessel supports.
    server.expect_no_content(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 254, "mem_size_mib": 2}"#,
    );
}

#[test]
fn boot_source_drives_and_interfaces_show_in_vm_config() {
    let server = TestServer::start();
    let initial = server.request("GET", "/vm/config", None);
    assert_eq!(initial.status, 200);
    assert_eq!(
        initial.json(),
        json!({"drives": [], "machine-config": {"vcpu_count": 1, "mem_size_mib": 128,
               "smt": false, "track_dirty_pages": false, "huge_pages": "None"},
               "network-interfaces": []})
    );
    let boot = json!({"kernel_image_path": server.kernel, "boot_args": "console=ttyS0 reboot=k",
                      "initrd_path": server.rootfs});
    server.expect_no_content("PUT", "/boot-source", &boot.to_string());
    let rootfs = json!({"drive_id": "rootfs", "path_on_host": server.rootfs,
        "is_root_device": true, "is_read_only": false, "partuuid": "0eaa91a0-01",
        "cache_type": "Writeback", "io_engine": "Sync", "format": "raw",
        "rate_limiter": {"bandwidth": {"size": 0, "refill_time": 1000},
                         "ops": {"size": 100, "one_time_burst": 50, "refill_time": 0}}});
    server.expect_no_content("PUT", "/drives/rootfs", &rootfs.to_string());
    let data = json!({"drive_id": "data1", "path_on_host": server.rootfs,
                      "is_root_device": false, "is_read_only": true});
    server.expect_no_content("PUT", "/drives/data1", &data.to_string());
    let tap = json!({"iface_id": "eth0", "host_dev_name": "tap0",
                     "guest_mac": "06:00:AC:10:00:02",
                     "rx_rate_limiter": {"ops": {"size": 0, "refill_time": 100}}});
    server.expect_no_content("PUT", "/network-interfaces/eth0", &tap.to_string());
    let nat = json!({"iface_id": "eth1", "mode": "nat"});
    server.expect_no_content("PUT", "/network-interfaces/eth1", &nat.to_string());

    let config = server.request("GET", "/vm/config", None).json();
    assert_eq!(config["boot-source"], boot);
    assert_eq!(config["drives"][0], rootfs);
    assert_eq!(
        config["drives"][1],
        json!({"drive_id": "data1", "path_on_host": server.rootfs, "is_root_device": false,
               "is_read_only": true, "cache_type": "Unsafe", "io_engine": "Sync"})
    );
    assert_eq!(config["network-interfaces"][0], tap);
    assert_eq!(config["network-interfaces"][1], nat);

    // The handle reports the same configuration to the VMM side.
    let handle_config = server.handle.as_ref().unwrap().config();
    assert_eq!(handle_config.drives[0].cache_type, CacheType::Writeback);
    assert_eq!(handle_config.drives[0].format, Some(DriveFormat::Raw));
    assert_eq!(
        handle_config.network_interfaces[1].mode,
        Some(NetworkMode::Nat)
    );
}

#[test]
fn rate_limiters_are_accepted_and_the_async_engine_refused() {
    let server = TestServer::start();
    let limited = json!({"drive_id": "rootfs", "path_on_host": server.rootfs,
        "is_root_device": true,
        "rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 100}}});
    server.expect_no_content("PUT", "/drives/rootfs", &limited.to_string());
    let engine = json!({"drive_id": "scratch", "path_on_host": server.rootfs,
        "is_root_device": false, "io_engine": "Async"});
    server.expect_fault(
        "PUT",
        "/drives/scratch",
        Some(&engine.to_string()),
        "io_engine \"Async\"",
    );
    let iface = json!({"iface_id": "eth0", "mode": "nat",
        "tx_rate_limiter": {"ops": {"size": 100, "refill_time": 1000}}});
    server.expect_no_content("PUT", "/network-interfaces/eth0", &iface.to_string());
    let config = server.request("GET", "/vm/config", None).json();
    assert_eq!(
        config["drives"][0]["rate_limiter"]["bandwidth"],
        json!({"size": 1048576, "refill_time": 100})
    );
    assert_eq!(
        config["network-interfaces"][0]["tx_rate_limiter"]["ops"]["size"],
        100
    );
}

#[test]
fn patches_follow_firecracker_rules_after_boot() {
    let server = TestServer::start();
    let drive = json!({"drive_id": "scratch", "path_on_host": server.rootfs,
        "is_root_device": false,
        "rate_limiter": {"ops": {"size": 10, "refill_time": 100}}});
    server.expect_no_content("PUT", "/drives/scratch", &drive.to_string());
    let iface = json!({"iface_id": "eth0", "mode": "nat"});
    server.expect_no_content("PUT", "/network-interfaces/eth0", &iface.to_string());
    let limits = json!({"drive_id": "scratch",
        "rate_limiter": {"bandwidth": {"size": 5000, "refill_time": 100}}})
    .to_string();
    server.expect_fault(
        "PATCH",
        "/drives/scratch",
        Some(&limits),
        "not supported before starting",
    );
    let boot = json!({"kernel_image_path": server.kernel}).to_string();
    server.expect_no_content("PUT", "/boot-source", &boot);
    server.expect_no_content("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);

    let empty = json!({"drive_id": "scratch"}).to_string();
    server.expect_fault(
        "PATCH",
        "/drives/scratch",
        Some(&empty),
        "at least one property to patch: path_on_host, rate_limiter",
    );
    let read_only = json!({"drive_id": "scratch", "path_on_host": server.rootfs,
        "is_read_only": true})
    .to_string();
    server.expect_fault(
        "PATCH",
        "/drives/scratch",
        Some(&read_only),
        "unknown field `is_read_only`",
    );
    let missing = json!({"drive_id": "scratch", "path_on_host": "/no/such/file"}).to_string();
    server.expect_fault(
        "PATCH",
        "/drives/scratch",
        Some(&missing),
        "drive update (patch): device error: ",
    );
    // vessel's extension goes with a new image only: never accepted and ignored.
    let lone = json!({"drive_id": "scratch", "rate_limiter": {},
        "allow_external_backing": true})
    .to_string();
    server.expect_fault(
        "PATCH",
        "/drives/scratch",
        Some(&lone),
        "allow_external_backing applies to a new path_on_host only",
    );
    let other = json!({"drive_id": "other", "rate_limiter": {}}).to_string();
    server.expect_fault(
        "PATCH",
        "/drives/other",
        Some(&other),
        "Invalid block device ID",
    );
    server.expect_no_content("PATCH", "/drives/scratch", &limits);
    let swap = json!({"drive_id": "scratch", "path_on_host": server.rootfs}).to_string();
    server.expect_no_content("PATCH", "/drives/scratch", &swap);
    let rx = json!({"iface_id": "eth0",
        "rx_rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 10}}})
    .to_string();
    server.expect_no_content("PATCH", "/network-interfaces/eth0", &rx);
    let nope = json!({"iface_id": "eth1"}).to_string();
    server.expect_fault(
        "PATCH",
        "/network-interfaces/eth1",
        Some(&nope),
        "Invalid network interface ID",
    );
    // The patched buckets replace theirs; the others stay.
    let config = server.request("GET", "/vm/config", None).json();
    assert_eq!(
        config["drives"][0]["rate_limiter"],
        json!({"bandwidth": {"size": 5000, "refill_time": 100},
               "ops": {"size": 10, "refill_time": 100}})
    );
    assert_eq!(config["drives"][0]["format"], "raw");
    assert_eq!(
        config["network-interfaces"][0]["rx_rate_limiter"]["bandwidth"]["size"],
        1000
    );
    let calls = server.backend.calls();
    let count = |name: &str| calls.iter().filter(|c| *c == name).count();
    assert_eq!(count("update_drive"), 2);
    assert_eq!(count("update_network_interface"), 1);
}

#[test]
fn the_logger_is_configured_once_before_boot() {
    let server = TestServer::start();
    let path = server.dir.path().join("vessel.log");
    let config = json!({"log_path": path, "level": "Debug", "show_level": true,
        "show_log_origin": true, "module": "virtio::blk"})
    .to_string();
    server.expect_fault("PUT", "/logger", Some(&config), "Cannot open the log file");
    std::fs::write(&path, "").unwrap();
    let bad_level = json!({"log_path": path, "level": "Loud"}).to_string();
    server.expect_fault("PUT", "/logger", Some(&bad_level), "unknown variant `Loud`");
    server.expect_no_content("PUT", "/logger", &config);
    server.expect_fault(
        "PUT",
        "/logger",
        Some(&config),
        "Reinitialization of logger not allowed.",
    );
    assert_eq!(server.backend.calls(), vec!["configure_logger"]);
}

#[test]
fn metrics_are_written_as_firecracker_json_lines_on_flush() {
    let server = TestServer::start();
    let path = server.dir.path().join("metrics.fifo-or-file");
    let config = json!({"metrics_path": path}).to_string();
    server.expect_fault(
        "PUT",
        "/metrics",
        Some(&config),
        "Cannot open the metrics file",
    );
    std::fs::write(&path, "").unwrap();
    server.expect_no_content("PUT", "/metrics", &config);
    server.expect_fault(
        "PUT",
        "/metrics",
        Some(&config),
        "Reinitialization of metrics not allowed.",
    );
    assert_eq!(server.request("GET", "/", None).status, 200);
    let flush = json!({"action_type": "FlushMetrics"}).to_string();
    server.expect_no_content("PUT", "/actions", &flush);
    server.expect_no_content("PUT", "/actions", &flush);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0]["utc_timestamp_ms"].as_u64().unwrap() > 0);
    assert_eq!(lines[0]["put_api_requests"]["metrics_count"], 2);
    assert_eq!(lines[0]["put_api_requests"]["metrics_fails"], 1);
    // expect_fault's check that the server still answers, and the explicit GET.
    assert_eq!(lines[0]["get_api_requests"]["instance_info_count"], 2);
    // The first flush is counted in the second line.
    assert_eq!(lines[1]["put_api_requests"]["actions_count"], 1);
}

#[test]
fn null_optional_fields_mean_absent() {
    let server = TestServer::start();
    let boot = json!({"kernel_image_path": server.kernel, "boot_args": null, "initrd_path": null});
    server.expect_no_content("PUT", "/boot-source", &boot.to_string());
    let drive = json!({"drive_id": "d", "path_on_host": server.rootfs, "is_root_device": false,
                       "partuuid": null, "rate_limiter": null, "format": null});
    server.expect_no_content("PUT", "/drives/d", &drive.to_string());
    let iface = json!({"iface_id": "e", "host_dev_name": "tap0", "guest_mac": null,
                       "rx_rate_limiter": {"bandwidth": null, "ops": null}, "mode": null});
    server.expect_no_content("PUT", "/network-interfaces/e", &iface.to_string());
    server.expect_no_content(
        "PATCH",
        "/machine-config",
        r#"{"vcpu_count": null, "mem_size_mib": 64}"#,
    );
    let config = server.request("GET", "/vm/config", None).json();
    assert_eq!(
        config["boot-source"],
        json!({"kernel_image_path": server.kernel})
    );
    assert!(config["drives"][0].get("partuuid").is_none());
    assert_eq!(
        config["network-interfaces"][0]["rx_rate_limiter"],
        json!({})
    );
    assert_eq!(config["machine-config"]["vcpu_count"], 1);
    assert_eq!(config["machine-config"]["mem_size_mib"], 64);
}

#[test]
fn firecracker_client_sequence() {
    let server = TestServer::start();
    server.expect_no_content(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 2, "mem_size_mib": 256}"#,
    );
    let boot = json!({"kernel_image_path": server.kernel,
                      "boot_args": "console=ttyS0 reboot=k panic=1 pci=off"});
    server.expect_no_content("PUT", "/boot-source", &boot.to_string());
    let rootfs = json!({"drive_id": "rootfs", "path_on_host": server.rootfs,
                        "is_root_device": true, "is_read_only": false});
    server.expect_no_content("PUT", "/drives/rootfs", &rootfs.to_string());
    let net = json!({"iface_id": "net1", "guest_mac": "06:00:AC:10:00:02",
                     "host_dev_name": "tap0"});
    server.expect_no_content("PUT", "/network-interfaces/net1", &net.to_string());
    assert_eq!(server.state(), "Not started");
    server.expect_no_content("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    assert_eq!(server.state(), "Running");
    server.expect_no_content("PATCH", "/vm", r#"{"state": "Paused"}"#);
    assert_eq!(server.state(), "Paused");
    assert_eq!(
        server.handle.as_ref().unwrap().state(),
        InstanceState::Paused
    );
    server.expect_no_content("PATCH", "/vm", r#"{"state": "Resumed"}"#);
    assert_eq!(server.state(), "Running");
    server.expect_no_content("PUT", "/actions", r#"{"action_type": "SendCtrlAltDel"}"#);
    assert_eq!(
        server.backend.calls(),
        ["start", "pause", "resume", "send_ctrl_alt_del"]
    );

    let started = server.backend.started_with.lock().unwrap().clone().unwrap();
    assert_eq!(started.machine.vcpu_count, 2);
    assert_eq!(started.machine.mem_size_bytes(), 256 << 20);
    assert_eq!(started.boot_source.kernel_image_path, server.kernel);
    assert_eq!(
        started.boot_source.boot_args.as_deref(),
        Some("console=ttyS0 reboot=k panic=1 pci=off")
    );
    assert_eq!(started.drives.len(), 1);
    assert_eq!(started.drives[0].path_on_host, server.rootfs);
    assert_eq!(started.drives[0].io_engine, IoEngine::Sync);
    assert_eq!(
        started.network_interfaces[0].host_dev_name.as_deref(),
        Some("tap0")
    );
    // Reads keep working after start.
    assert_eq!(server.request("GET", "/vm/config", None).status, 200);
    assert_eq!(server.request("GET", "/machine-config", None).status, 200);
}

/// The sequence from Firecracker's getting-started guide, sent by curl itself.
#[test]
fn curl_getting_started_sequence() {
    let server = TestServer::start();
    let socket = server.socket.to_str().unwrap();
    let curl = |method: &str, path: &str, body: Option<String>| -> (u16, String) {
        let mut command = Command::new("curl");
        command.args([
            "--silent",
            "--show-error",
            "--unix-socket",
            socket,
            "-X",
            method,
        ]);
        command.args(["-w", "\n%{http_code}"]);
        command.args(["-H", "Accept: application/json"]);
        if let Some(body) = body {
            command.args(["-H", "Content-Type: application/json", "-d", &body]);
        }
        command.arg(format!("http://localhost{path}"));
        let output = command
            .output()
            .expect("curl must be installed for this test (apt-get install -y curl)");
        assert!(output.status.success(), "curl failed: {output:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), body.to_string())
    };
    let boot = json!({"kernel_image_path": server.kernel,
                      "boot_args": "console=ttyS0 reboot=k panic=1 pci=off"});
    assert_eq!(curl("PUT", "/boot-source", Some(boot.to_string())).0, 204);
    let rootfs = json!({"drive_id": "rootfs", "path_on_host": server.rootfs,
                        "is_root_device": true, "is_read_only": false});
    assert_eq!(
        curl("PUT", "/drives/rootfs", Some(rootfs.to_string())).0,
        204
    );
    let machine = r#"{"vcpu_count": 2, "mem_size_mib": 1024}"#.to_string();
    assert_eq!(curl("PUT", "/machine-config", Some(machine)).0, 204);
    let start = r#"{"action_type": "InstanceStart"}"#.to_string();
    assert_eq!(curl("PUT", "/actions", Some(start.clone())).0, 204);
    let (code, body) = curl("GET", "/", None);
    assert_eq!(code, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["state"], "Running");
    assert_eq!(
        curl("PATCH", "/vm", Some(r#"{"state": "Paused"}"#.into())).0,
        204
    );
    let (_, body) = curl("GET", "/", None);
    assert!(body.contains(r#""state":"Paused""#), "{body}");
    let (code, body) = curl("PUT", "/actions", Some(start));
    assert_eq!(code, 400);
    assert!(
        body.contains("not supported after starting the microVM"),
        "{body}"
    );
    let (code, body) = curl("DELETE", "/drives/rootfs", None);
    assert_eq!(code, 400);
    assert!(
        body.contains("Invalid request method and/or path"),
        "{body}"
    );
}

#[test]
fn keep_alive_connection_serves_many_requests() {
    let server = TestServer::start();
    let mut connection = common::Connection::open(&server.socket);
    for round in 0..20u32 {
        let body = format!(
            r#"{{"vcpu_count": {}, "mem_size_mib": 128}}"#,
            round % 8 + 1
        );
        assert_eq!(
            connection
                .send("PUT", "/machine-config", Some(&body))
                .status,
            204
        );
        // A bad request in the middle of the connection does not end it.
        assert_eq!(
            connection.send("PUT", "/machine-config", Some("{")).status,
            400
        );
        let got = connection.send("GET", "/machine-config", None).json();
        assert_eq!(got["vcpu_count"], round % 8 + 1);
    }
}
