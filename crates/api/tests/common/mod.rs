//! Test helpers: a mock VMM backend and a small HTTP/1.1 client over a unix socket that can
//! also send requests no well-behaved client would.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{ApiServerHandle, ServerOptions, VmConfigSnapshot, VmmBackend};

/// Records every call; fails the ones listed in `fail_calls`.
#[derive(Default)]
pub struct MockBackend {
    pub calls: Mutex<Vec<String>>,
    pub started_with: Mutex<Option<VmConfigSnapshot>>,
    pub fail_calls: Mutex<Vec<&'static str>>,
}

impl MockBackend {
    fn record(&self, name: &'static str) -> Result<(), api::BackendError> {
        self.calls.lock().unwrap().push(name.to_string());
        if self.fail_calls.lock().unwrap().contains(&name) {
            Err(format!("mock backend refused {name}").into())
        } else {
            Ok(())
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl VmmBackend for MockBackend {
    fn start(&self, config: &VmConfigSnapshot) -> Result<(), api::BackendError> {
        *self.started_with.lock().unwrap() = Some(config.clone());
        self.record("start")
    }
    fn send_ctrl_alt_del(&self) -> Result<(), api::BackendError> {
        self.record("send_ctrl_alt_del")
    }
    fn pause(&self) -> Result<(), api::BackendError> {
        self.record("pause")
    }
    fn resume(&self) -> Result<(), api::BackendError> {
        self.record("resume")
    }
    fn update_drive(
        &self,
        _index: usize,
        _drive: &api::Drive,
        _update: &api::DriveUpdate,
    ) -> Result<Option<api::DriveFormat>, api::BackendError> {
        self.record("update_drive")
            .map(|()| Some(api::DriveFormat::Raw))
    }
    fn update_network_interface(
        &self,
        _index: usize,
        _update: &api::NetworkInterfaceUpdate,
    ) -> Result<(), api::BackendError> {
        self.record("update_network_interface")
    }
    fn configure_logger(
        &self,
        _file: Option<std::fs::File>,
        _config: &api::LoggerConfig,
    ) -> Result<(), api::BackendError> {
        self.record("configure_logger")
    }
}

/// A server on a fresh socket in a temporary directory, with a kernel and disk image there.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub backend: Arc<MockBackend>,
    pub handle: Option<ApiServerHandle>,
    pub kernel: String,
    pub rootfs: String,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(ServerOptions::default())
    }

    pub fn start_with(options: ServerOptions) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"not really a kernel").unwrap();
        let rootfs = dir.path().join("rootfs.ext4");
        std::fs::write(&rootfs, vec![0u8; 1 << 16]).unwrap();
        let backend = Arc::new(MockBackend::default());
        let handle = api::serve(&socket, backend.clone(), options).unwrap();
        TestServer {
            socket,
            backend,
            handle: Some(handle),
            kernel: kernel.to_str().unwrap().to_string(),
            rootfs: rootfs.to_str().unwrap().to_string(),
            dir,
        }
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        request(&self.socket, method, path, body)
    }

    /// Asserts the request fails with 400 and a fault message containing `needle`.
    pub fn expect_fault(&self, method: &str, path: &str, body: Option<&str>, needle: &str) {
        let response = self.request(method, path, body);
        assert_eq!(
            response.status, 400,
            "{method} {path} {body:?}: {response:?}"
        );
        let message = response.fault_message();
        assert!(
            message.contains(needle),
            "{method} {path} {body:?}: fault {message:?} lacks {needle:?}"
        );
        // The server keeps answering after every bad request.
        assert_eq!(self.request("GET", "/", None).status, 200);
    }

    pub fn expect_no_content(&self, method: &str, path: &str, body: &str) {
        let response = self.request(method, path, Some(body));
        assert_eq!(response.status, 204, "{method} {path} {body}: {response:?}");
        assert!(response.body.is_empty());
    }

    pub fn state(&self) -> String {
        let info = self.request("GET", "/", None).json();
        info["state"].as_str().unwrap().to_string()
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn fault_message(&self) -> String {
        assert_eq!(self.header("content-type"), Some("application/json"));
        let json = self.json();
        let object = json.as_object().expect("fault body is an object");
        assert_eq!(object.len(), 1, "fault body has only fault_message: {json}");
        json["fault_message"]
            .as_str()
            .expect("fault_message is a string")
            .to_string()
    }
}

/// One request on a fresh connection.
pub fn request(socket: &Path, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
    let mut connection = Connection::open(socket);
    connection.send(method, path, body)
}

/// A keep-alive connection.
pub struct Connection {
    stream: UnixStream,
    buffer: Vec<u8>,
}

impl Connection {
    pub fn open(socket: &Path) -> Connection {
        let stream = UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Connection {
            stream,
            buffer: Vec::new(),
        }
    }

    /// A connection on a stream the test already wrote to.
    pub fn from_stream(stream: UnixStream) -> Connection {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Connection {
            stream,
            buffer: Vec::new(),
        }
    }

    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    pub fn send(&mut self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body.unwrap_or("").as_bytes());
        self.send_raw(&raw)
    }

    /// Writes `raw` as is (a write error, say the server closed early, is ignored) and reads
    /// one response.
    pub fn send_raw(&mut self, raw: &[u8]) -> HttpResponse {
        let _ = self.stream.write_all(raw);
        self.read_response()
    }

    pub fn read_response(&mut self) -> HttpResponse {
        let head_end = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end;
            }
            assert!(
                self.fill() > 0,
                "connection closed before a response: {:?}",
                self.buffer
            );
        };
        let head = String::from_utf8(self.buffer[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (key, value) = line.split_once(':').unwrap();
                (key.trim().to_string(), value.trim().to_string())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case("content-length"))
            .map(|(_, value)| value.parse().unwrap())
            .unwrap_or(0);
        let body_start = head_end + 4;
        while self.buffer.len() < body_start + length {
            assert!(self.fill() > 0, "connection closed inside a body");
        }
        let body = self.buffer[body_start..body_start + length].to_vec();
        self.buffer.drain(..body_start + length);
        HttpResponse {
            status,
            headers,
            body,
        }
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let read = self.stream.read(&mut chunk).unwrap_or(0);
        self.buffer.extend_from_slice(&chunk[..read]);
        read
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
