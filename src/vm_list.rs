//! What vessel reports about VMs: the `ls` table, `inspect` (a human page by default,
//! JSON with `--json`), and the typed JSON summary of one VM that `ls --json` and
//! `create/start/stop/clone --json` print (fields in docs/vm-definition.md).

use anyhow::Result;
use serde_json::{json, Value};

use crate::state::{self, StateDir, VmDir, VmState};
use crate::vmdef::VmDefinition;

/// One forward as JSON: `{"protocol", "host_address", "host_port", "guest_port"}`.
fn forward_json(f: &net::Forward) -> Value {
    json!({
        "protocol": match f.protocol {
            net::Protocol::Tcp => "tcp",
            net::Protocol::Udp => "udp",
        },
        "host_address": f.listen_addr().to_string(),
        "host_port": f.host_port,
        "guest_address": f.guest_addr.map(|a| a.to_string()),
        "guest_port": f.guest_port,
    })
}

/// The typed summary of a VM whose definition loads.
fn summary_of(vm: &VmDir, def: &VmDefinition, st: &VmState) -> Value {
    let running = matches!(st, VmState::Running { .. });
    json!({
        "name": vm.name,
        "state": st.label(),
        "pid": st.vmm_pid(),
        "cpus": def.cpus.get_ref(),
        "memory_mib": def.memory_bytes() >> 20,
        "disks": def.disks.len(),
        "nics": def.nics.len(),
        "ports": def.forwards().iter().map(forward_json).collect::<Vec<_>>(),
        "uptime_seconds": running.then(|| vm.uptime()).flatten(),
    })
}

/// The summary of one VM; a VM whose definition does not load is `"state": "broken"` with
/// the reason in `"error"`.
pub fn summary(vm: &VmDir) -> Value {
    let def = vm.definition().map(|d| crate::vm_ports::current(vm, d));
    match def.and_then(|d| Ok((vm.state()?, d))) {
        Ok((st, def)) => summary_of(vm, &def, &st),
        Err(e) => json!({"name": vm.name, "state": "broken", "error": format!("{e:#}")}),
    }
}

/// Print `summary` as pretty JSON.
pub fn print_summary(vm: &VmDir) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(&summary(vm))?);
    Ok(())
}

fn human_duration(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

/// `2048` MiB as `2G`, `512` as `512M`.
fn memory_text(mib: u64) -> String {
    if mib >= 1024 && mib.is_multiple_of(1024) {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
    }
}

/// `ls`: every VM, one row each; a VM whose definition is broken is listed as such (its
/// reason on stderr) and the others are still listed.
pub fn ls(state: &StateDir, json_out: bool) -> Result<i32> {
    let rows: Vec<Value> = state
        .list()?
        .iter()
        .map(|n| Ok(summary(&state.vm(n)?)))
        .collect::<Result<_>>()?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header([
        "NAME", "STATE", "CPUS", "MEMORY", "DISKS", "PORTS", "UPTIME",
    ]);
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    for r in &rows {
        if r["state"] == "broken" {
            eprintln!(
                "vessel: VM '{}' is broken: {}",
                text(&r["name"]),
                text(&r["error"])
            );
            table.add_row([text(&r["name"]), "broken".into()]);
            continue;
        }
        let ports: Vec<String> = r["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}:{}->{}/{}",
                    text(&p["host_address"]),
                    p["host_port"],
                    p["guest_port"],
                    text(&p["protocol"])
                )
            })
            .collect();
        table.add_row([
            text(&r["name"]),
            text(&r["state"]),
            text(&r["cpus"]),
            memory_text(r["memory_mib"].as_u64().unwrap_or(0)),
            text(&r["disks"]),
            if ports.is_empty() {
                "-".into()
            } else {
                ports.join(",")
            },
            r["uptime_seconds"]
                .as_u64()
                .map(human_duration)
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    println!("{table}");
    Ok(0)
}

/// `inspect --json`: everything about one VM, for programs.
fn inspect_value(vm: &VmDir, def: &VmDefinition) -> Result<Value> {
    let st = vm.state()?;
    let mut v = summary_of(vm, def, &st);
    let extra = json!({
        "directory": vm.dir,
        "serial_log": vm.path(state::SERIAL_LOG),
        "console_socket": vm.path(state::CONSOLE_SOCKET),
        "api_socket": vm.path(state::API_SOCKET),
        "last_exit": vm.exit_note(),
        "last_serial_lines": vm.last_serial_lines(10),
        "definition": serde_json::to_value(def)?,
        "snapshots": crate::snapshot_cli::inspect_json(vm),
        // Forwards added while the VM runs (also in `ports` and vm.toml), with their
        // open connections.
        "live_forwards": if matches!(st, VmState::Running { .. }) {
            crate::vm_forwards::live_json(vm, def)
        } else {
            Vec::new()
        },
    });
    if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    Ok(v)
}

/// `inspect`: a page for people by default, the JSON form with `--json`.
pub fn inspect(state: &StateDir, name: &str, json_out: bool) -> Result<i32> {
    let vm = state.vm(name)?;
    let def = crate::vm_ports::current(&vm, vm.definition()?);
    let v = inspect_value(&vm, &def)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", inspect_page(&v, &def));
    }
    Ok(0)
}

/// The human form of `inspect`: `Label: value` lines, then the last serial lines.
fn inspect_page(v: &Value, def: &VmDefinition) -> String {
    let s = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let mut state = s(&v["state"]);
    if let (Some(pid), Some(up)) = (v["pid"].as_i64(), v["uptime_seconds"].as_u64()) {
        state += &format!(" (pid {pid}, up {})", human_duration(up));
    }
    let mut lines = vec![
        ("Name", s(&v["name"])),
        ("State", state),
        ("CPUs", s(&v["cpus"])),
        ("Memory", format!("{} MiB", v["memory_mib"])),
        ("Kernel", def.boot.kernel.get_ref().display().to_string()),
        (
            "Initrd",
            def.boot
                .initrd
                .as_ref()
                .map_or("-".into(), |i| i.get_ref().display().to_string()),
        ),
        ("Cmdline", def.boot.cmdline.clone()),
    ];
    for d in &def.disks {
        let mut text = d.path.get_ref().display().to_string();
        if let Some(f) = &d.format {
            text += &format!(" ({})", f.get_ref());
        }
        if d.readonly {
            text += " read-only";
        }
        lines.push(("Disk", text));
    }
    if def.rng {
        lines.push(("RNG", "virtio-rng".into()));
    }
    if let Some(p) = &def.pit {
        lines.push(("PIT", p.get_ref().clone()));
    }
    if let Some(c) = &def.console2 {
        lines.push(("Console 2", c.get_ref().display().to_string()));
    }
    for n in &def.nics {
        let mut text = n.mode.get_ref().clone();
        for f in &n.forward {
            match net::config::parse_forward(f.get_ref()) {
                Ok(f) => text += &format!(", forward {f}"),
                Err(_) => text += &format!(", forward {}", f.get_ref()),
            }
        }
        lines.push(("NIC", text));
    }
    for f in v["live_forwards"].as_array().into_iter().flatten() {
        lines.push((
            "Live fwd",
            format!(
                "tcp {}:{} -> guest port {}, {} connection(s) open",
                f["host_addr"].as_str().unwrap_or("127.0.0.1"),
                f["host_port"],
                f["guest_port"],
                f["connections"]
            ),
        ));
    }
    lines.extend([
        ("Directory", s(&v["directory"])),
        ("Serial log", s(&v["serial_log"])),
        ("API socket", s(&v["api_socket"])),
        ("Last exit", s(&v["last_exit"])),
    ]);
    if let Some(snaps) = v["snapshots"]["snapshots"]
        .as_array()
        .filter(|a| !a.is_empty())
    {
        let names: Vec<String> = snaps.iter().map(|x| s(&x["name"])).collect();
        lines.push(("Snapshots", names.join(", ")));
    }
    let mut out = String::new();
    for (label, value) in lines {
        out += &format!("{:<12}{value}\n", format!("{label}:"));
    }
    if let Some(serial) = v["last_serial_lines"].as_array().filter(|a| !a.is_empty()) {
        out += "Last serial lines:\n";
        for l in serial {
            out += &format!("  {}\n", s(l));
        }
    }
    out
}
