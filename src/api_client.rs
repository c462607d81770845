//! Requests on a background VM's API socket (`api.sock` in its directory), as the CLI's
//! commands for running VMs make them: plain, or with a descriptor passed along
//! (SCM_RIGHTS) for a run-time port forward's listening socket.

use std::io::{Read, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

/// One request on the VM's API socket: (HTTP status, body).
pub fn api_call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String)> {
    api_call_waiting(socket, method, path, body, Duration::from_secs(30))
}

/// [`api_call`], its answer awaited at most `timeout` (a migration's call lasts as long as
/// the copy).
pub fn api_call_waiting(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<(u16, String)> {
    call(socket, method, path, body, None, timeout)
}

/// [`api_call`], with `fd` sent along with the request's bytes.
pub fn api_call_with_fd(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
    fd: Option<BorrowedFd<'_>>,
) -> Result<(u16, String)> {
    call(socket, method, path, body, fd, Duration::from_secs(30))
}

fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
    fd: Option<BorrowedFd<'_>>,
    timeout: Duration,
) -> Result<(u16, String)> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("cannot reach the VMM's API socket {}", socket.display()))?;
    stream.set_read_timeout(Some(timeout))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if !body.is_empty() {
        request += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    request += "\r\n";
    request += &body;
    match fd {
        Some(fd) => api::send_with_fd(&stream, request.as_bytes(), fd)?,
        None => stream.write_all(request.as_bytes())?,
    }
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("the VMM's API answered no HTTP response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("the VMM's API answered a bad status line"))?;
    Ok((status, body.to_string()))
}

/// The API's `fault_message`, or the body.
pub fn fault(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["fault_message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_message_is_unwrapped() {
        assert_eq!(
            fault(r#"{"fault_message": "No balloon device found."}"#),
            "No balloon device found."
        );
        assert_eq!(fault("plain"), "plain");
    }
}
