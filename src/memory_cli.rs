//! `vessel memory NAME [--target SIZE] [--json]`: a running background VM's memory through
//! its balloon. The target is the memory the guest keeps (Hyper-V's view): the balloon
//! takes the rest. The VMM is asked over its API socket (`api.sock` in the VM's directory)
//! with Firecracker's balloon requests.

use std::path::Path;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::api_client::{api_call, fault};
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
    let dynamic = def.balloon.as_ref().and_then(|b| b.to_config().dynamic);
    if let (Some(_), Some(d)) = (args.target, dynamic) {
        return Err(crate::exit::usage(format!(
            "VM '{}' has dynamic memory (at least {} MiB, {} % buffer): its balloon follows the \
             guest's use; remove [balloon.dynamic] from its definition to set a target by hand",
            args.name, d.min_mib, d.buffer_percent
        )));
    }
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
    let mut report = report(&args.name, memory_mib, &balloon, stats.as_ref());
    report["dynamic"] = serde_json::to_value(dynamic)?;
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
    let d = &r["dynamic"];
    let dynamic = match (d["min_mib"].as_u64(), d["buffer_percent"].as_u64()) {
        (Some(min), Some(buffer)) => format!(
            "at least {min} MiB, {buffer} % buffer, shrinks after {} s",
            d["shrink_delay_s"].as_u64().unwrap_or(0)
        ),
        _ => "off".to_string(),
    };
    println!("  {:<16} {dynamic}", "dynamic memory");
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
}
