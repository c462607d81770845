//! vessel's run-time port forwards over the API: the listening socket travels with the
//! request (SCM_RIGHTS) and reaches the backend; refusals are clear.

mod common;

use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use api::{LivePortForward, PortForward, ServerOptions, VmConfigSnapshot, VmmBackend};
use common::Connection;
use serde_json::json;

/// Keeps the forwards it was given, with the port its socket listens on.
#[derive(Default)]
struct ForwardBackend {
    forwards: Mutex<Vec<(usize, PortForward, u16)>>,
}

impl VmmBackend for ForwardBackend {
    fn start(&self, _: &VmConfigSnapshot) -> Result<(), api::BackendError> {
        Ok(())
    }
    fn send_ctrl_alt_del(&self) -> Result<(), api::BackendError> {
        Ok(())
    }
    fn pause(&self) -> Result<(), api::BackendError> {
        Ok(())
    }
    fn resume(&self) -> Result<(), api::BackendError> {
        Ok(())
    }
    fn forwards(&self, index: usize) -> Result<Vec<LivePortForward>, api::BackendError> {
        Ok(self
            .forwards
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, _, _)| *i == index)
            .map(|(_, forward, _)| LivePortForward {
                forward: *forward,
                connections: 0,
            })
            .collect())
    }
    fn add_forward(
        &self,
        index: usize,
        forward: &PortForward,
        listener: OwnedFd,
    ) -> Result<(), api::BackendError> {
        let listener = TcpListener::from(listener);
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        self.forwards.lock().unwrap().push((index, *forward, port));
        Ok(())
    }
    fn remove_forward(&self, index: usize, host_port: u16) -> Result<(), api::BackendError> {
        let mut forwards = self.forwards.lock().unwrap();
        let before = forwards.len();
        forwards.retain(|(i, f, _)| !(*i == index && f.host_port == host_port));
        if forwards.len() == before {
            return Err(format!("no run-time forward on host port {host_port}").into());
        }
        Ok(())
    }
}

fn running_server(
    backend: Arc<ForwardBackend>,
) -> (tempfile::TempDir, std::path::PathBuf, api::ApiServerHandle) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let nic: api::NetworkInterface =
        serde_json::from_value(json!({"iface_id": "net0", "mode": "nat"})).unwrap();
    let config = VmConfigSnapshot {
        machine: api::MachineConfig::default(),
        boot_source: serde_json::from_value(json!({"kernel_image_path": "/k"})).unwrap(),
        drives: Vec::new(),
        network_interfaces: vec![nic],
        vsock: None,
        balloon: None,
        mmds: None,
    };
    let options = ServerOptions {
        running: Some(config),
        ..ServerOptions::default()
    };
    let handle = api::serve(&socket, backend, options).unwrap();
    (dir, socket, handle)
}

fn put_with_fd(
    socket: &std::path::Path,
    path: &str,
    body: &str,
    fd: std::os::fd::BorrowedFd,
) -> common::HttpResponse {
    let stream = UnixStream::connect(socket).unwrap();
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    api::send_with_fd(&stream, request.as_bytes(), fd).unwrap();
    let mut connection = Connection::from_stream(stream);
    connection.read_response()
}

#[test]
fn a_forward_is_added_with_its_socket_listed_and_removed() {
    let backend = Arc::new(ForwardBackend::default());
    let (_dir, socket, _handle) = running_server(backend.clone());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = json!({"protocol": "tcp", "host_port": port, "guest_port": 8000}).to_string();
    let response = put_with_fd(
        &socket,
        "/network-interfaces/net0/forwards",
        &body,
        listener.as_fd(),
    );
    assert_eq!(response.status, 204, "{response:?}");
    assert_eq!(
        backend.forwards.lock().unwrap()[0].2,
        port,
        "the socket arrived"
    );

    let listed = common::request(&socket, "GET", "/network-interfaces/net0/forwards", None);
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.json(),
        json!([{"protocol": "tcp", "host_port": port, "guest_port": 8000, "connections": 0}])
    );
    let path = format!("/network-interfaces/net0/forwards/{port}");
    let removed = common::request(&socket, "DELETE", &path, None);
    assert_eq!(removed.status, 204, "{removed:?}");
    let again = common::request(&socket, "DELETE", &path, None);
    assert_eq!(again.status, 400);
    assert!(again.fault_message().contains("no run-time forward"));
}

#[test]
fn forwards_without_a_socket_or_on_unknown_interfaces_are_refused() {
    let backend = Arc::new(ForwardBackend::default());
    let (_dir, socket, _handle) = running_server(backend.clone());
    let body = json!({"host_port": 8000, "guest_port": 80}).to_string();
    let response = common::request(
        &socket,
        "PUT",
        "/network-interfaces/net0/forwards",
        Some(&body),
    );
    assert_eq!(response.status, 400);
    assert!(
        response.fault_message().contains("SCM_RIGHTS"),
        "{response:?}"
    );
    let response = common::request(&socket, "GET", "/network-interfaces/net9/forwards", None);
    assert!(response.fault_message().contains("not found: net9"));
    let response = common::request(
        &socket,
        "DELETE",
        "/network-interfaces/net0/forwards/0",
        None,
    );
    assert!(response.fault_message().contains("not a host port"));
    let bad = json!({"host_port": 8000, "guest_port": 80, "extra": 1}).to_string();
    let response = common::request(
        &socket,
        "PUT",
        "/network-interfaces/net0/forwards",
        Some(&bad),
    );
    assert_eq!(response.status, 400);
    assert!(backend.forwards.lock().unwrap().is_empty());
}

#[test]
fn forwards_before_the_vm_starts_are_refused() {
    let server = common::TestServer::start();
    server.expect_fault(
        "GET",
        "/network-interfaces/net0/forwards",
        None,
        "not supported before starting",
    );
}
