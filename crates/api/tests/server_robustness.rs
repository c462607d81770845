//! The server under abuse: oversized and malformed HTTP, many clients at once, and the socket
//! file's life cycle.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use api::{ApiError, ServerOptions, SocketError, DEFAULT_MAX_BODY_BYTES};
use common::{Connection, MockBackend, TestServer};

fn machine_config_padded_to(len: usize) -> String {
    let mut body = r#"{"vcpu_count": 2, "mem_size_mib": 256}"#.to_string();
    body.insert_str(1, &" ".repeat(len - body.len()));
    body
}

#[test]
fn body_at_the_limit_is_accepted() {
    let server = TestServer::start();
    let body = machine_config_padded_to(DEFAULT_MAX_BODY_BYTES);
    assert_eq!(body.len(), DEFAULT_MAX_BODY_BYTES);
    server.expect_no_content("PUT", "/machine-config", &body);
}

#[test]
fn oversized_body_with_content_length_gets_413() {
    let server = TestServer::start();
    for size in [DEFAULT_MAX_BODY_BYTES + 1, 1 << 20, 16 << 20] {
        let body = machine_config_padded_to(size);
        let response = server.request("PUT", "/machine-config", Some(&body));
        assert_eq!(response.status, 413, "{size} bytes");
        assert!(response
            .fault_message()
            .contains("larger than the limit of 65536 bytes"));
        assert_eq!(server.request("GET", "/", None).status, 200);
    }
    assert_eq!(
        server.request("GET", "/machine-config", None).json()["vcpu_count"],
        1
    );
}

#[test]
fn oversized_chunked_body_gets_413() {
    let server = TestServer::start();
    let mut connection = Connection::open(&server.socket);
    let mut raw =
        b"PUT /machine-config HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    let chunk = vec![b' '; 8192];
    for _ in 0..16 {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let response = connection.send_raw(&raw);
    assert_eq!(response.status, 413);
    assert_eq!(server.request("GET", "/", None).status, 200);
}

#[test]
fn chunked_body_within_the_limit_is_accepted() {
    let server = TestServer::start();
    let mut connection = Connection::open(&server.socket);
    let body = br#"{"vcpu_count": 3, "mem_size_mib": 64}"#;
    let (first, second) = body.split_at(10);
    let mut raw =
        b"PUT /machine-config HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for part in [first, second] {
        raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        raw.extend_from_slice(part);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(connection.send_raw(&raw).status, 204);
    assert_eq!(
        connection.send("GET", "/machine-config", None).json()["vcpu_count"],
        3
    );
}

#[test]
fn garbage_http_ends_only_its_own_connection() {
    let server = TestServer::start();
    let garbage: [&[u8]; 5] = [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
        b"PUT /actions HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
    ];
    for raw in garbage {
        let mut stream = UnixStream::connect(&server.socket).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        stream.write_all(raw).unwrap();
        let mut reply = Vec::new();
        // hyper answers 400 (or just closes); either way the connection ends.
        let _ = stream.read_to_end(&mut reply);
        if !reply.is_empty() {
            let text = String::from_utf8_lossy(&reply);
            assert!(text.starts_with("HTTP/1.1 4"), "{raw:?} -> {text}");
        }
        assert_eq!(
            server.request("GET", "/", None).status,
            200,
            "after {raw:?}"
        );
    }
    // A client that connects and hangs up at once.
    drop(UnixStream::connect(&server.socket).unwrap());
    assert_eq!(server.request("GET", "/", None).status, 200);
}

#[test]
fn concurrent_clients() {
    let server = Arc::new(TestServer::start());
    let clients: Vec<_> = (0..16u32)
        .map(|client| {
            let server = server.clone();
            thread::spawn(move || {
                let mut connection = Connection::open(&server.socket);
                for round in 0..25u32 {
                    let vcpus = (client + round) % 16 + 1;
                    let body = format!(r#"{{"vcpu_count": {vcpus}, "mem_size_mib": 512}}"#);
                    let put = if round % 2 == 0 {
                        connection.send("PUT", "/machine-config", Some(&body))
                    } else {
                        server.request("PUT", "/machine-config", Some(&body))
                    };
                    assert_eq!(put.status, 204);
                    assert_eq!(
                        connection.send("PUT", "/machine-config", Some("{")).status,
                        400
                    );
                    let got = connection.send("GET", "/machine-config", None);
                    assert_eq!(got.status, 200);
                    let count = got.json()["vcpu_count"].as_u64().unwrap();
                    assert!((1..=16).contains(&count));
                    assert_eq!(connection.send("GET", "/", None).status, 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let config = server.request("GET", "/vm/config", None).json();
    assert_eq!(config["machine-config"]["mem_size_mib"], 512);
}

#[test]
fn concurrent_instance_start_starts_once() {
    let server = Arc::new(TestServer::start());
    let boot = serde_json::json!({"kernel_image_path": server.kernel}).to_string();
    server.expect_no_content("PUT", "/boot-source", &boot);
    let starters: Vec<_> = (0..8)
        .map(|_| {
            let server = server.clone();
            thread::spawn(move || {
                server
                    .request(
                        "PUT",
                        "/actions",
                        Some(r#"{"action_type": "InstanceStart"}"#),
                    )
                    .status
            })
        })
        .collect();
    let mut statuses: Vec<u16> = starters.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [204, 400, 400, 400, 400, 400, 400, 400]);
    assert_eq!(server.backend.calls(), ["start"]);
}

fn short_timeout_server() -> TestServer {
    TestServer::start_with(ServerOptions {
        read_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    })
}

#[test]
fn slow_body_gets_408_and_the_server_goes_on() {
    let server = short_timeout_server();
    let mut connection = Connection::open(&server.socket);
    let started = Instant::now();
    let response = connection
        .send_raw(b"PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"vc");
    assert_eq!(response.status, 408);
    assert!(response.fault_message().contains("did not arrive in time"));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.request("GET", "/", None).status, 200);
}

#[test]
fn idle_and_slow_header_connections_are_closed() {
    let server = short_timeout_server();
    // Idle after a request.
    let mut idle = Connection::open(&server.socket);
    assert_eq!(idle.send("GET", "/", None).status, 200);
    // Headers that never finish.
    let mut partial = UnixStream::connect(&server.socket).unwrap();
    partial.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    // Silent from the start.
    let silent = UnixStream::connect(&server.socket).unwrap();
    for mut stream in [idle.into_stream(), partial, silent] {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "closed by the server, not by us"
        );
    }
    assert_eq!(server.request("GET", "/", None).status, 200);
}

#[test]
fn live_socket_is_not_taken_over() {
    let server = TestServer::start();
    let result = api::serve(
        &server.socket,
        Arc::new(MockBackend::default()),
        ServerOptions::default(),
    );
    assert!(matches!(
        result,
        Err(ApiError::Socket(SocketError::InUse(_)))
    ));
    // The first server is untouched.
    assert_eq!(server.request("GET", "/", None).status, 200);
}

#[test]
fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let handle = api::serve(
        &socket,
        Arc::new(MockBackend::default()),
        ServerOptions::default(),
    )
    .unwrap();
    assert_eq!(common::request(&socket, "GET", "/", None).status, 200);
    handle.shutdown().unwrap();
}

#[test]
fn non_socket_file_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    std::fs::write(&path, b"keep me").unwrap();
    let result = api::serve(
        &path,
        Arc::new(MockBackend::default()),
        ServerOptions::default(),
    );
    assert!(matches!(
        result,
        Err(ApiError::Socket(SocketError::NotASocket(_)))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

#[test]
fn shutdown_closes_connections_and_removes_the_socket() {
    let mut server = TestServer::start();
    let mut idle = Connection::open(&server.socket);
    assert_eq!(idle.send("GET", "/", None).status, 200);
    let started = Instant::now();
    server.handle.take().unwrap().shutdown().unwrap();
    assert!(!server.socket.exists());
    assert!(UnixStream::connect(&server.socket).is_err());
    // The idle keep-alive connection was closed by the server.
    let mut buf = [0u8; 1];
    let mut stream = idle.into_stream();
    assert_eq!(stream.read(&mut buf).unwrap_or(0), 0);
    // Closed by shutdown, not by the 30 s idle timeout.
    assert!(started.elapsed() < Duration::from_secs(5));
    // The path can be served again.
    let again = api::serve(
        &server.socket,
        Arc::new(MockBackend::default()),
        ServerOptions::default(),
    )
    .unwrap();
    assert_eq!(
        common::request(&server.socket, "GET", "/", None).status,
        200
    );
    drop(again);
    assert!(!server.socket.exists());
}

/// A backend that panics in `pause`, as a VMM bug would (in a debug build; release builds
/// abort on panic).
struct PanickingBackend;

impl api::VmmBackend for PanickingBackend {
    fn start(&self, _: &api::VmConfigSnapshot) -> Result<(), api::BackendError> {
        Ok(())
    }
    fn send_ctrl_alt_del(&self) -> Result<(), api::BackendError> {
        Ok(())
    }
    fn pause(&self) -> Result<(), api::BackendError> {
        panic!("backend bug while pausing");
    }
    fn resume(&self) -> Result<(), api::BackendError> {
        Ok(())
    }
}

#[test]
fn backend_panic_gets_500_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, b"k").unwrap();
    let handle = api::serve(
        &socket,
        Arc::new(PanickingBackend),
        ServerOptions::default(),
    )
    .unwrap();
    let send =
        |method: &str, path: &str, body: Option<&str>| common::request(&socket, method, path, body);
    let boot = serde_json::json!({"kernel_image_path": kernel}).to_string();
    assert_eq!(send("PUT", "/boot-source", Some(&boot)).status, 204);
    assert_eq!(
        send(
            "PUT",
            "/actions",
            Some(r#"{"action_type": "InstanceStart"}"#)
        )
        .status,
        204
    );
    let response = send("PATCH", "/vm", Some(r#"{"state": "Paused"}"#));
    assert_eq!(response.status, 500);
    assert!(response.fault_message().contains("The VMM failed"));
    // The state machine is still usable and unchanged.
    let info = send("GET", "/", None).json();
    assert_eq!(info["state"], "Running");
    assert_eq!(
        send(
            "PUT",
            "/actions",
            Some(r#"{"action_type": "SendCtrlAltDel"}"#)
        )
        .status,
        204
    );
    handle.shutdown().unwrap();
}
