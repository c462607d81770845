//! MMDS, Firecracker's metadata service, through `vessel run --api-sock`: the document and
//! configuration over the API socket (curl, and the unmodified firecracker-python client),
//! and a Linux guest that reads it over HTTP at 169.254.169.254 through vessel's virtio-net
//! with a V2 session token (docs/mmds.md). The same guest then serves a port that the host
//! forwards to it while it runs (the run-time forward relay, docs/networking.md).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::api::{curl, ApiVmm};
use common::nested::{debian_guest, nested_cmdline};
use common::tcg::guest_result;

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

/// `PUT /network-interfaces/{id}/forwards` with the listening socket passed along.
fn put_forward(sock: &Path, iface: &str, body: &str, listener: &TcpListener) -> (u16, String) {
    let stream = UnixStream::connect(sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let request = format!(
        "PUT /network-interfaces/{iface}/forwards HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    api::send_with_fd(&stream, request.as_bytes(), listener.as_fd()).unwrap();
    let mut response = String::new();
    use std::io::Read;
    let _ = (&stream).read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// Waits for the guest's nc to listen (or the VMM to exit).
fn wait_for_listener(vmm: &mut ApiVmm, timeout: Duration) {
    let start = Instant::now();
    while !vmm.serial().contains("VESSEL-LISTENING 8000") {
        if let Some(status) = vmm.child.try_wait().unwrap() {
            panic!("the VMM exited ({status}) first:\n{}", vmm.serial());
        }
        let serial = vmm.serial();
        assert!(
            !serial.contains("VESSEL-TEST-FAIL") && !serial.contains("VESSEL-ERROR"),
            "the guest failed before serving:\n{serial}"
        );
        assert!(start.elapsed() < timeout, "no listener:\n{}", vmm.serial());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The host adds a forward to the guest's port 8000 while the VM runs and talks through it.
fn forward_at_run_time(vmm: &mut ApiVmm) {
    wait_for_listener(vmm, Duration::from_secs(40 * 60));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let udp = format!(r#"{{"protocol": "udp", "host_port": {port}, "guest_port": 8000}}"#);
    let (code, reply) = put_forward(&vmm.sock, "eth0", &udp, &listener);
    assert_eq!(code, 400, "{reply}");
    assert!(reply.contains("UDP forwards cannot be added"), "{reply}");
    let tcp = format!(r#"{{"host_port": {port}, "guest_port": 8000}}"#);
    let (code, reply) = put_forward(&vmm.sock, "eth0", &tcp, &listener);
    assert_eq!(code, 204, "{reply}");
    drop(listener);
    let (code, listed) = curl(&vmm.sock, "GET", "/network-interfaces/eth0/forwards", None);
    assert_eq!(code, 200, "{listed}");
    assert!(
        listed.contains(&format!(r#""host_port":{port}"#)),
        "{listed}"
    );
    let started = Instant::now();
    let mut host = TcpStream::connect(("127.0.0.1", port)).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(10 * 60)))
        .unwrap();
    host.write_all(b"hello through the relay\n").unwrap();
    let mut line = String::new();
    BufReader::new(&host).read_line(&mut line).unwrap();
    eprintln!("forwarded round trip: {:?}", started.elapsed());
    assert_eq!(line.trim_end(), "guest heard: hello through the relay");
}

/// Debian's kernel (nested-host profile) with a `nat` virtio-net NIC (passt): the MMDS
/// answers on the wire itself. The guest script (tests/guests/tcg/nested-mmds.sh)
/// configures an address and a route, takes a token and reads the value; then it serves
/// port 8000, which the host forwards to it at run time.
#[test]
fn debian_guest_reads_mmds_v2_with_a_token_through_virtio_net() {
    let (kernel, initrd) = debian_guest();
    let started = Instant::now();
    let mut vmm = ApiVmm::spawn("mmds-guest", &[]);
    let call = |method: &str, path: &str, body: &str| {
        let (code, reply) = vmm.call(method, path, body);
        assert_eq!(code, 204, "{method} {path}: {reply}");
    };
    call(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 256}"#,
    );
    let boot = serde_json::json!({
        "kernel_image_path": kernel,
        "initrd_path": initrd,
        "boot_args": format!("{} vessel.test=nested-mmds", nested_cmdline()),
    });
    call("PUT", "/boot-source", &boot.to_string());
    call(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "mode": "nat", "guest_mac": "52:54:00:12:34:56"}"#,
    );
    call(
        "PUT",
        "/mmds/config",
        r#"{"version": "V2", "network_interfaces": ["eth0"]}"#,
    );
    call(
        "PUT",
        "/mmds",
        r#"{"latest": {"meta-data": {"instance-id": "i-vessel-42", "local-hostname": "guest"}}}"#,
    );
    call("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    forward_at_run_time(&mut vmm);
    let (status, stderr) = vmm.wait_exit(Duration::from_secs(50 * 60));
    let serial = vmm.serial();
    eprintln!("time to power-off: {:?}", started.elapsed());
    assert!(
        serial.contains("VESSEL-TEST-PASS nested-mmds"),
        "status {status:?}\nserial:\n{serial}\nstderr:\n{stderr}"
    );
    assert_eq!(
        guest_result(&serial, "mmds_no_token"),
        "HTTP/1.1 401 Unauthorized"
    );
    assert_eq!(
        guest_result(&serial, "mmds_token_status"),
        "HTTP/1.1 200 OK"
    );
    assert_eq!(guest_result(&serial, "mmds_get_status"), "HTTP/1.1 200 OK");
    assert_eq!(guest_result(&serial, "mmds_instance_id"), "i-vessel-42");
    assert_eq!(
        guest_result(&serial, "mmds_listing"),
        "instance-id,local-hostname,"
    );
    assert_eq!(
        guest_result(&serial, "fwd_received"),
        "hello through the relay"
    );
}
