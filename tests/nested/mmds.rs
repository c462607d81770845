//! MMDS through a Linux guest: Debian's kernel reads the metadata over HTTP at
//! 169.254.169.254 through vessel's virtio-net with a V2 session token (docs/mmds.md), then
//! serves a port that the host forwards to it while it runs (the run-time forward relay,
//! docs/networking.md).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::api::{curl, ApiVmm};
use crate::common::nested::{debian_guest, nested_cmdline};
use crate::common::tcg::guest_result;

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
    ::api::send_with_fd(&stream, request.as_bytes(), listener.as_fd()).unwrap();
    let mut response = String::new();
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
        // Only virtio-net's modules and the virtio-pci core: every module load is slow
        // ring-0 work where ring 0 is emulated.
        "boot_args": format!(
            "{} vessel.modules=virtio_ring,virtio,virtio_pci_modern_dev,virtio_pci_legacy_dev,\
             virtio_pci,failover,net_failover,virtio_net vessel.test=nested-mmds",
            nested_cmdline()
        ),
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
