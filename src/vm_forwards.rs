//! Port forwards of a VM: `vessel set NAME --forward SPEC` on a running VM adds them live
//! (VirtualBox's `controlvm natpf`) and to vm.toml, `--remove-forward HOST_PORT` takes them
//! away again. The CLI binds the host port and passes the listening socket to the VMM over
//! its API socket (`PUT /network-interfaces/netN/forwards`): the confined VMM opens no
//! sockets. passt, which serves the forwards given at start, is not restarted; the
//! forwards it holds stay until the VM stops.

use std::net::TcpListener;
use std::os::fd::AsFd;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::api_client::{api_call, api_call_with_fd, fault};
use crate::exit::usage;
use crate::state::{self, VmDir};
use crate::vmdef::VmDefinition;

/// The NIC `--forward` goes to: the first nat or natnet one (index, mode).
fn forward_nic(def: &VmDefinition, name: &str) -> Result<(usize, String)> {
    def.nics
        .iter()
        .position(|n| n.is_nat())
        .map(|i| (i, def.nics[i].mode.get_ref().clone()))
        .ok_or_else(|| {
            usage(format!(
                "VM '{name}' has no nat NIC to forward to (stop it and add one with --nic nat)"
            ))
        })
}

/// The forwards of the running VM's `nat` NIC `index` that were added at run time.
fn live_forwards(vm: &VmDir, index: usize) -> Result<Vec<Value>> {
    let (status, body) = api_call(
        &vm.path(state::API_SOCKET),
        "GET",
        &format!("/network-interfaces/net{index}/forwards"),
        None,
    )?;
    if status != 200 {
        bail!("the VMM cannot list its forwards: {}", fault(&body));
    }
    Ok(serde_json::from_str::<Vec<Value>>(&body)?)
}

/// Adds `specs` to the running VM's first nat NIC, live, then to `def`.
pub fn add_live(vm: &VmDir, def: &mut VmDefinition, specs: &[String]) -> Result<()> {
    let (index, mode) = forward_nic(def, &vm.name)?;
    if mode != "nat" {
        return Err(usage(format!(
            "VM '{}' forwards through {mode}: only a nat NIC takes forwards while the VM runs; stop it first (vessel stop {})",
            vm.name, vm.name
        )));
    }
    let mut held: Vec<net::Forward> = def.nics[index]
        .forward
        .iter()
        .filter_map(|f| net::config::parse_forward(f.get_ref()).ok())
        .collect();
    for spec in specs {
        let forward = net::config::parse_forward(spec).map_err(|e| usage(e.to_string()))?;
        if forward.protocol == net::Protocol::Udp {
            return Err(usage(format!(
                "forward '{spec}': UDP forwards cannot be added to a running VM; stop it first (vessel stop {}) or give it at create",
                vm.name
            )));
        }
        if let Some(same) = held.iter().find(|f| f.host_port == forward.host_port) {
            return Err(usage(format!(
                "host port {} is already forwarded on VM '{}' ({same})",
                forward.host_port, vm.name
            )));
        }
        add_one(vm, index, &forward)?;
        held.push(forward);
        def.nics[index]
            .forward
            .push(toml::Spanned::new(0..0, spec.clone()));
        println!("forwarding {forward} on running VM '{}'", vm.name);
    }
    Ok(())
}

/// Binds the forward's host port and hands the listener to the VMM.
fn add_one(vm: &VmDir, index: usize, forward: &net::Forward) -> Result<()> {
    let addr = (forward.listen_addr(), forward.host_port);
    let listener = TcpListener::bind(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            usage(format!(
                "host port {}:{} is in use",
                forward.listen_addr(),
                forward.host_port
            ))
        } else {
            anyhow::anyhow!(
                "cannot listen on {}:{}: {e}",
                forward.listen_addr(),
                forward.host_port
            )
        }
    })?;
    let body = json!({
        "protocol": "tcp",
        "host_addr": forward.listen_addr().to_string(),
        "host_port": forward.host_port,
        "guest_addr": forward.guest_addr.map(|a| a.to_string()),
        "guest_port": forward.guest_port,
    });
    let (status, reply) = api_call_with_fd(
        &vm.path(state::API_SOCKET),
        "PUT",
        &format!("/network-interfaces/net{index}/forwards"),
        Some(&body),
        Some(listener.as_fd()),
    )?;
    if status != 204 {
        return Err(usage(format!(
            "the VMM refused the forward {forward}: {}",
            fault(&reply)
        )));
    }
    Ok(())
}

/// `--remove-forward HOST_PORT` on a running VM: a forward added at run time stops now;
/// one passt holds since the start is refused.
pub fn remove_live(vm: &VmDir, def: &mut VmDefinition, host_port: u16) -> Result<()> {
    let (index, mode) = forward_nic(def, &vm.name)?;
    let live = if mode == "nat" {
        live_forwards(vm, index)?
    } else {
        Vec::new()
    };
    if !live.iter().any(|f| f["host_port"] == host_port) {
        if def.forwards().iter().any(|f| f.host_port == host_port) {
            return Err(usage(format!(
                "host port {host_port} of VM '{}' is forwarded since the VM started (by passt): it can only be removed with the VM stopped (vessel stop {})",
                vm.name, vm.name
            )));
        }
        return Err(usage(format!(
            "VM '{}' forwards no host port {host_port}",
            vm.name
        )));
    }
    let (status, reply) = api_call(
        &vm.path(state::API_SOCKET),
        "DELETE",
        &format!("/network-interfaces/net{index}/forwards/{host_port}"),
        None,
    )?;
    if status != 204 {
        bail!("the VMM refused to remove the forward: {}", fault(&reply));
    }
    remove_from(def, host_port);
    println!(
        "stopped forwarding host port {host_port} on running VM '{}'",
        vm.name
    );
    Ok(())
}

/// Removes the forward on `host_port` from `def`'s NICs; the spec removed.
pub fn remove_from(def: &mut VmDefinition, host_port: u16) -> Option<String> {
    for nic in &mut def.nics {
        let at = nic.forward.iter().position(|f| {
            net::config::parse_forward(f.get_ref()).is_ok_and(|p| p.host_port == host_port)
        });
        if let Some(at) = at {
            return Some(nic.forward.remove(at).into_inner());
        }
    }
    None
}

/// The running VM's run-time forwards as `ls --json`/`inspect` show them (empty when it
/// has no nat NIC or does not answer).
pub fn live_json(vm: &VmDir, def: &VmDefinition) -> Vec<Value> {
    let Ok((index, mode)) = forward_nic(def, &vm.name) else {
        return Vec::new();
    };
    if mode != "nat" {
        return Vec::new();
    }
    live_forwards(vm, index).unwrap_or_default()
}
