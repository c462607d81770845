//! `vessel vhost-user-net --nic nat` driven by a real Linux virtio-net driver: the stock
//! Debian cloud kernel under QEMU TCG (tests/common/tcg.rs) leases an address from vessel's
//! NAT, fetches a file from a host server on loopback, serves a forwarded port, and finds
//! the backend working after QEMU was killed in the middle of a download.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tcg::{self, GuestImage, GuestRun, Qemu, Served};

const MAC: &str = "52:54:00:12:34:56";

/// `python3 -m http.server` on 127.0.0.1:PORT serving DIR; killed on drop.
struct HttpServer(Child);

impl HttpServer {
    fn start(dir: &Path, port: u16) -> HttpServer {
        tcg::require_tool("python3", "python3");
        let child = tcg::die_with_test(&mut Command::new("python3"))
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let server = HttpServer(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "http.server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// 16 MiB of varied bytes (a xorshift stream: many segments and receive windows) in
/// `www`/payload.bin; returns the file's length and sha256.
fn write_payload(www: &Path) -> (usize, String) {
    std::fs::create_dir_all(www).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let payload: Vec<u8> = (0..(16usize << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let path = www.join("payload.bin");
    std::fs::write(&path, &payload).unwrap();
    (payload.len(), tcg::sha256_file(&path))
}

fn payload_params(port: u16) -> [(&'static str, String); 2] {
    [
        ("port", port.to_string()),
        ("file", "payload.bin".to_owned()),
    ]
}

/// Boot net-wget against `nic`: lease, download payload.bin from the host, check it.
fn download_checks(guest: &GuestImage, nic: &Served, port: u16, len: usize, sha: &str) -> GuestRun {
    let run = Qemu::boot(guest, "net-wget", &payload_params(port), &nic.qemu_args).finish();
    run.expect_pass(nic);
    assert!(
        run.result("lease").starts_with("10.0.2."),
        "unexpected lease"
    );
    assert_eq!(run.result("fetched_bytes"), len.to_string());
    assert_eq!(run.result("sha256_fetched"), sha);
    run
}

#[test]
fn nat_lease_and_download_from_host_loopback() {
    let Some(guest) = tcg::guest() else { return };
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    let (len, sha) = write_payload(&www);
    let port = tcg::free_port();
    let _server = HttpServer::start(&www, port);

    let mut nic = Served::nat(&dir.path().join("net.sock"), MAC, None);
    let run = download_checks(guest, &nic, port, len, &sha);
    println!(
        "lease {} via router {}; TCG-bound guest wget of 16 MiB from the host: {}",
        run.result("lease"),
        run.result("router"),
        run.result("fetch_rate")
    );
    nic.stop();
}

#[test]
fn net_backend_survives_qemu_killed_mid_download() {
    let Some(guest) = tcg::guest() else { return };
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    let (len, sha) = write_payload(&www);
    let port = tcg::free_port();
    let _server = HttpServer::start(&www, port);
    let mut nic = Served::nat(&dir.path().join("net.sock"), MAC, None);

    let mut victim = Qemu::boot(guest, "net-hammer", &payload_params(port), &nic.qemu_args);
    victim.wait_for("VESSEL-HAMMER-RUNNING", tcg::GUEST_TIMEOUT);
    // Downloads keep running; kill QEMU in the middle of one.
    std::thread::sleep(Duration::from_millis(700));
    victim.kill();
    assert!(
        nic.is_running(),
        "vessel exited when QEMU was killed:\n{}",
        nic.log()
    );
    download_checks(guest, &nic, port, len, &sha);
    nic.stop();
}

/// Connect to the forwarded host port and exchange one line with the guest's listener;
/// retried while the forward is not connected through yet.
fn exchange(port: u16, line: &str, deadline: Instant) -> String {
    let mut last_error = String::new();
    while Instant::now() < deadline {
        match try_exchange(port, line) {
            Ok(reply) if !reply.is_empty() => return reply,
            Ok(_) => last_error = "connection closed without a reply".into(),
            Err(e) => last_error = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no reply through 127.0.0.1:{port}: {last_error}");
}

fn try_exchange(port: u16, line: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    Ok(reply.trim_end().to_owned())
}

#[test]
fn forwarded_host_port_reaches_guest_listener() {
    let Some(guest) = tcg::guest() else { return };
    let dir = tempfile::tempdir().unwrap();
    let host_port = tcg::free_port();
    let guest_port = 7777;
    let mut nic = Served::nat(
        &dir.path().join("net.sock"),
        MAC,
        Some((host_port, guest_port)),
    );
    let params = [("port", guest_port.to_string())];
    let mut qemu = Qemu::boot(guest, "net-listen", &params, &nic.qemu_args);
    qemu.wait_for("VESSEL-LISTENING", tcg::GUEST_TIMEOUT);
    let line = "hello from the host";
    let reply = exchange(host_port, line, Instant::now() + Duration::from_secs(60));
    assert_eq!(reply, format!("guest heard: {line}"));
    let run = qemu.finish();
    run.expect_pass(&nic);
    assert_eq!(run.result("guest_received"), line);
    nic.stop();
}
