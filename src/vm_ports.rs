//! Host ports chosen when a VM starts. A forward written `tcp:127.0.0.1:auto-:22` in
//! vm.toml (what `vessel create --image` gives its NAT NIC) gets a 127.0.0.1 port that is
//! free at `vessel start` time — not at create time, when another program or VM may take
//! it before the VM starts. The chosen forwards are the VM's runtime state: the file
//! `ports` in its directory, one resolved forward a line in the definition's order, read
//! by the VMM, `ls`/`inspect` and `ssh`/`cp` while the VM runs.

use anyhow::{anyhow, bail, Context, Result};
use toml::Spanned;

use crate::state::{StateDir, VmDir, VmState};
use crate::vmdef::VmDefinition;

/// The runtime file of the chosen forwards.
pub const PORTS_FILE: &str = "ports";
/// The host-port spelling that means "a free port, chosen at start".
const AUTO: &str = ":auto-";

/// Whether a forward's host port is chosen at start.
pub fn is_auto(spec: &str) -> bool {
    spec.contains(AUTO)
}

/// The forward spelling with `port` as its host port.
fn with_port(spec: &str, port: u16) -> String {
    spec.replacen(AUTO, &format!(":{port}-"), 1)
}

/// Parse a forward as vm.toml may spell it: with a host port, or `auto` for one chosen
/// at start (parsed with a placeholder port; its host address must be loopback).
pub fn parse(spec: &str) -> Result<net::Forward, String> {
    if !is_auto(spec) {
        return net::config::parse_forward(spec).map_err(|e| e.to_string());
    }
    let f = net::config::parse_forward(&with_port(spec, 1)).map_err(|e| e.to_string())?;
    if !f.listen_addr().is_loopback() {
        return Err(format!(
            "forward '{spec}': a host port chosen at start (auto) listens on 127.0.0.1 only"
        ));
    }
    Ok(f)
}

/// The `auto` forward as the definition's NAT NIC of an image VM carries it.
pub fn auto_ssh_forward() -> String {
    format!("tcp:127.0.0.1{AUTO}:22")
}

fn auto_slots(def: &VmDefinition) -> Vec<(usize, usize)> {
    let mut slots = Vec::new();
    for (n, nic) in def.nics.iter().enumerate() {
        for (i, f) in nic.forward.iter().enumerate() {
            if is_auto(f.get_ref()) {
                slots.push((n, i));
            }
        }
    }
    slots
}

/// Whether `def` forwards a host port to the guest's SSH port 22, fixed or chosen at start.
pub fn forwards_ssh(def: &VmDefinition) -> bool {
    let is_ssh = |f: &net::Forward| f.protocol == net::Protocol::Tcp && f.guest_port == 22;
    def.forwards().iter().any(is_ssh) || auto_forwards(def).iter().any(is_ssh)
}

/// The forwards whose host port is still `auto` (with a placeholder port).
pub fn auto_forwards(def: &VmDefinition) -> Vec<net::Forward> {
    auto_slots(def)
        .into_iter()
        .filter_map(|(n, i)| parse(def.nics[n].forward[i].get_ref()).ok())
        .collect()
}

/// At `vessel start`: choose a free port for each `auto` forward of `vm` and record them;
/// a VM without any gets no ports file.
pub fn choose(state: &StateDir, vm: &VmDir, def: &VmDefinition) -> Result<()> {
    let path = vm.path(PORTS_FILE);
    let slots = auto_slots(def);
    if slots.is_empty() {
        let _ = std::fs::remove_file(&path);
        return Ok(());
    }
    let mut taken = ports_in_use(state, &vm.name)?;
    let mut lines = String::new();
    for (n, i) in slots {
        let port = free_port(&taken)?;
        taken.push(port);
        lines += &with_port(def.nics[n].forward[i].get_ref(), port);
        lines.push('\n');
    }
    std::fs::write(&path, lines).with_context(|| format!("cannot write {}", path.display()))
}

/// Put the ports chosen at start into `def`'s `auto` forwards. For the VMM, which needs
/// them all: an error when they were not chosen.
pub fn resolve(vm: &VmDir, def: &mut VmDefinition) -> Result<()> {
    let slots = auto_slots(def);
    if slots.is_empty() {
        return Ok(());
    }
    let path = vm.path(PORTS_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "VM '{}' has forwards whose host port is chosen by `vessel start`, and no {}",
            vm.name,
            path.display()
        )
    })?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != slots.len() {
        bail!(
            "{}: {} forwards for {} chosen at start",
            path.display(),
            lines.len(),
            slots.len()
        );
    }
    for ((n, i), line) in slots.into_iter().zip(lines) {
        let chosen =
            net::config::parse_forward(line).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let spec = &mut def.nics[n].forward[i];
        if with_port(spec.get_ref(), chosen.host_port) != line {
            bail!("{}: '{line}' is not {}", path.display(), spec.get_ref());
        }
        *spec = Spanned::new(spec.span(), line.to_string());
    }
    Ok(())
}

/// `def` with its ports chosen at start filled in while `vm` runs; as written otherwise.
pub fn current(vm: &VmDir, mut def: VmDefinition) -> VmDefinition {
    if matches!(vm.state(), Ok(VmState::Running { .. })) {
        let _ = resolve(vm, &mut def);
    }
    def
}

/// Host ports other VMs forward: fixed ones in their definitions, chosen ones while they
/// run.
fn ports_in_use(state: &StateDir, except: &str) -> Result<Vec<u16>> {
    let mut taken = Vec::new();
    for name in state.list()? {
        if name == except {
            continue;
        }
        let vm = state.vm(&name)?;
        if let Ok(def) = vm.definition() {
            taken.extend(current(&vm, def).forwards().iter().map(|f| f.host_port));
        }
    }
    Ok(taken)
}

/// A 127.0.0.1 port nothing listens on now and not in `taken`.
pub fn free_port(taken: &[u16]) -> Result<u16> {
    for _ in 0..64 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    bail!("found no free TCP port on 127.0.0.1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_forwards_parse_and_take_a_port() {
        let spec = auto_ssh_forward();
        assert_eq!(spec, "tcp:127.0.0.1:auto-:22");
        assert!(is_auto(&spec) && !is_auto("tcp:127.0.0.1:2222-:22"));
        assert_eq!(parse(&spec).unwrap().guest_port, 22);
        assert_eq!(with_port(&spec, 40022), "tcp:127.0.0.1:40022-:22");
        assert!(parse("tcp:0.0.0.0:auto-:22")
            .unwrap_err()
            .contains("127.0.0.1"));
        assert!(parse("tcp:127.0.0.1:auto-:x").is_err());
        assert!(parse("tcp:127.0.0.1:2222-:22").is_ok());
    }

    fn def_with(forward: &str) -> VmDefinition {
        let text = format!(
            "name = \"d\"\n[boot]\nkernel = \"k\"\n[[nic]]\nmode = \"nat\"\nforward = [\"{forward}\"]\n"
        );
        VmDefinition::parse(std::path::Path::new("vm.toml"), &text).unwrap()
    }

    #[test]
    fn ssh_forwards_are_seen_whether_fixed_or_chosen_at_start() {
        // `vessel up` waits for sshd and `vessel inventory` lists the VM in both cases.
        assert!(forwards_ssh(&def_with(&auto_ssh_forward())));
        assert!(forwards_ssh(&def_with("tcp:127.0.0.1:2222-:22")));
        assert!(!forwards_ssh(&def_with("tcp:127.0.0.1:8080-:80")));
        assert!(!forwards_ssh(&def_with("tcp:127.0.0.1:auto-:80")));
    }

    #[test]
    fn free_ports_avoid_taken_ones() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = held.local_addr().unwrap().port();
        let p = free_port(&[busy]).unwrap();
        assert_ne!(p, busy);
    }
}
