//! `vessel memory NAME [--target SIZE] [--json]`: a running background VM's memory through
//! its balloon. The target is the memory the guest keeps (Hyper-V's view): the balloon
//! takes the rest. The VMM is asked over its API socket (`api.sock` in the VM's directory)
//! with Firecracker's balloon requests.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::state::{self, StateDir, VmState};

#[derive(Debug, clap::Args)]
pub struct MemoryArgs {
    /// The running VM (its definition needs a [balloon] section).
    name: String,
    /// The memory the guest keeps (e.g. 512M, 1G): the balloon takes the rest of the VM's
    /// memory. Without it, the current figures are shown.
    #[arg(long, value_parser = crate::size::parse_size)]
    target: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// One request on the VM's API socket: (HTTP status, body).
fn api_call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String)> {
    api_call_waiting(socket, method, path, body, Duration::from_secs(30))
}

/// One request on the VM's API socket, its answer awaited at most `timeout`.
pub(crate) fn api_call_waiting(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
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
    stream.write_all(request.as_bytes())?;
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
pub(crate) fn fault(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["fault_message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

fn get_json(socket: &Path, path: &str) -> Result<Value> {
    let (status, body) = api_call(socket, "GET", path, None)?;
    if status != 200 {
        bail!("{}", fault(&body));
    }
    Ok(serde_json::from_str(&body)?)
}

pub fn memory(state: &StateDir, args: MemoryArgs) -> Result<i32> {
    let vm = state.vm(&args.name)?;
    if !matches!(vm.state()?, VmState::Running { .. }) {
        return Err(crate::exit::usage(format!(
            "VM '{}' is not running (start it with `vessel start {}`)",
            args.name, args.name
        )));
    }
    let def = vm.definition()?;
    let memory_mib = def.memory_bytes() >> 20;
    let socket = vm.path(state::API_SOCKET);
    let balloon = match get_json(&socket, "/balloon") {
        Ok(b) => b,
        Err(e) if e.to_string().contains("No balloon device") => {
            return Err(crate::exit::usage(format!(
                "VM '{}' has no balloon: add a [balloon] section to its definition (docs/balloon.md) and restart it",
                args.name
            )))
        }
        Err(e) => return Err(e),
    };
    if let Some(target) = args.target {
        let target_mib = target >> 20;
        if target_mib == 0 || target_mib > memory_mib {
            return Err(crate::exit::usage(format!(
                "--target must be between 1M and the VM's memory ({memory_mib}M)"
            )));
        }
        let amount = u32::try_from(memory_mib - target_mib)?;
        let (status, body) = api_call(
            &socket,
            "PATCH",
            "/balloon",
            Some(&json!({ "amount_mib": amount })),
        )?;
        if status != 204 {
            bail!("the VMM refused the new balloon size: {}", fault(&body));
        }
    }
    let balloon = if args.target.is_some() {
        get_json(&socket, "/balloon")?
    } else {
        balloon
    };
    // Statistics exist only when the balloon polls them.
    let stats = get_json(&socket, "/balloon/statistics").ok();
    let report = report(&args.name, memory_mib, &balloon, stats.as_ref());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(0)
}

/// What `vessel memory` shows: the VM's memory, the balloon's target and what the driver
/// holds, and the guest's own figures when statistics are on.
fn report(name: &str, memory_mib: u64, balloon: &Value, stats: Option<&Value>) -> Value {
    let target_balloon = balloon["amount_mib"].as_u64().unwrap_or(0);
    let actual = stats.and_then(|s| s["actual_mib"].as_u64());
    let mib = |key: &str| stats.and_then(|s| s[key].as_u64()).map(|b| b >> 20);
    json!({
        "name": name,
        "memory_mib": memory_mib,
        "target_mib": memory_mib.saturating_sub(target_balloon),
        "balloon_target_mib": target_balloon,
        "balloon_actual_mib": actual,
        "guest_total_mib": mib("total_memory"),
        "guest_free_mib": mib("free_memory"),
        "guest_available_mib": mib("available_memory"),
    })
}

fn print_report(r: &Value) {
    let shown = |v: &Value| {
        v.as_u64()
            .map_or_else(|| "-".to_string(), |n| format!("{n} MiB"))
    };
    println!("VM {}", r["name"].as_str().unwrap_or_default());
    for (label, key) in [
        ("memory", "memory_mib"),
        ("target", "target_mib"),
        ("balloon target", "balloon_target_mib"),
        ("balloon now", "balloon_actual_mib"),
        ("guest total", "guest_total_mib"),
        ("guest free", "guest_free_mib"),
        ("guest available", "guest_available_mib"),
    ] {
        println!("  {label:<16} {}", shown(&r[key]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_turns_the_balloon_into_the_guests_target() {
        let balloon = json!({"amount_mib": 256});
        let stats = json!({"actual_mib": 200, "total_memory": 800u64 << 20});
        let r = report("dev", 1024, &balloon, Some(&stats));
        assert_eq!(r["target_mib"], 768);
        assert_eq!(r["balloon_actual_mib"], 200);
        assert_eq!(r["guest_total_mib"], 800);
        assert!(r["guest_free_mib"].is_null());
        let r = report("dev", 1024, &balloon, None);
        assert!(r["balloon_actual_mib"].is_null());
    }

    #[test]
    fn a_fault_message_is_unwrapped() {
        assert_eq!(
            fault(r#"{"fault_message": "No balloon device found."}"#),
            "No balloon device found."
        );
        assert_eq!(fault("plain"), "plain");
    }
}
