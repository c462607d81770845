//! `vessel inventory`: an Ansible dynamic inventory of the running VMs that answer on SSH
//! (Ansible's script-inventory JSON with `--list` and `--host`, or INI with `--ini`), so
//! `ansible-playbook -i scripts/vessel-inventory site.yml` reaches them with vessel's key
//! and known_hosts. Groups come from `groups = [...]` in each VM's definition.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use serde_json::{json, Map, Value};

use crate::ssh_cli::Target;
use crate::state::{StateDir, VmState};

#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// Print the whole inventory as Ansible's JSON (the default).
    #[arg(long, conflicts_with_all = ["host", "ini"])]
    list: bool,
    /// Print one host's variables as JSON ({} for a VM that is not in the inventory).
    #[arg(long, value_name = "NAME", conflicts_with = "ini")]
    host: Option<String>,
    /// Print an INI inventory instead (for `ansible-playbook -i <(vessel inventory --ini)`).
    #[arg(long)]
    ini: bool,
}

/// A reachable VM: its name, groups and SSH target.
struct Host {
    name: String,
    groups: Vec<String>,
    target: Target,
}

pub fn inventory(state: &StateDir, args: InventoryArgs) -> Result<i32> {
    let hosts = reachable(state)?;
    if let Some(name) = &args.host {
        let vars = hosts
            .iter()
            .find(|h| &h.name == name)
            .map_or(json!({}), |h| host_vars(&h.target));
        println!("{}", serde_json::to_string_pretty(&vars)?);
    } else if args.ini {
        print!("{}", ini(&hosts));
    } else {
        let _ = args.list;
        println!("{}", serde_json::to_string_pretty(&list(&hosts))?);
    }
    Ok(0)
}

/// Running VMs that forward a port to 22 and whose sshd answers now; the others are named
/// on stderr and left out.
fn reachable(state: &StateDir) -> Result<Vec<Host>> {
    let mut hosts = Vec::new();
    for name in state.list()? {
        let vm = state.vm(&name)?;
        let Ok(def) = vm.definition() else { continue };
        if !matches!(vm.state()?, VmState::Running { .. }) {
            continue;
        }
        if !crate::vm_ports::forwards_ssh(&def) {
            continue;
        }
        match crate::ssh_cli::target(state, &name, None, 0) {
            Ok(target) => hosts.push(Host {
                name,
                groups: def.groups.iter().map(|g| g.get_ref().clone()).collect(),
                target,
            }),
            Err(e) => eprintln!("vessel inventory: leaving out VM '{name}': {e:#}"),
        }
    }
    Ok(hosts)
}

fn ssh_args(t: &Target) -> String {
    format!(
        "-o UserKnownHostsFile={} -o StrictHostKeyChecking={} -o IdentitiesOnly=yes",
        t.known_hosts.display(),
        t.strict
    )
}

fn host_vars(t: &Target) -> Value {
    json!({
        "ansible_host": "127.0.0.1",
        "ansible_port": t.port,
        "ansible_user": t.user,
        "ansible_ssh_private_key_file": t.key.display().to_string(),
        "ansible_ssh_common_args": ssh_args(t),
    })
}

fn list(hosts: &[Host]) -> Value {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut hostvars = Map::new();
    for h in hosts {
        if h.groups.is_empty() {
            groups
                .entry("ungrouped".into())
                .or_default()
                .push(h.name.clone());
        }
        for g in &h.groups {
            groups.entry(g.clone()).or_default().push(h.name.clone());
        }
        hostvars.insert(h.name.clone(), host_vars(&h.target));
    }
    let mut out = Map::new();
    let children: Vec<&String> = groups.keys().collect();
    out.insert("all".into(), json!({ "children": children }));
    for (g, members) in &groups {
        out.insert(g.clone(), json!({ "hosts": members }));
    }
    out.insert("_meta".into(), json!({ "hostvars": hostvars }));
    Value::Object(out)
}

/// One INI inventory line for a host.
pub(crate) fn ini_line(name: &str, t: &Target) -> String {
    format!(
        "{name} ansible_host=127.0.0.1 ansible_port={} ansible_user={} ansible_ssh_private_key_file={} ansible_ssh_common_args={:?}",
        t.port,
        t.user,
        t.key.display(),
        ssh_args(t)
    )
}

fn ini(hosts: &[Host]) -> String {
    let mut text = String::new();
    for h in hosts {
        text += &ini_line(&h.name, &h.target);
        text.push('\n');
    }
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for h in hosts {
        for g in &h.groups {
            groups.entry(g).or_default().push(&h.name);
        }
    }
    for (g, members) in groups {
        text += &format!("\n[{g}]\n");
        for m in members {
            text += &format!("{m}\n");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, groups: &[&str], port: u16) -> Host {
        Host {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            target: Target {
                user: "debian".into(),
                port,
                options: Vec::new(),
                key: "/k/id_ed25519".into(),
                known_hosts: "/s/web/known_hosts".into(),
                strict: "yes",
            },
        }
    }

    #[test]
    fn list_has_groups_ungrouped_and_hostvars() {
        let v = list(&[host("web", &["front"], 2222), host("db", &[], 2223)]);
        assert_eq!(v["front"]["hosts"], json!(["web"]));
        assert_eq!(v["ungrouped"]["hosts"], json!(["db"]));
        assert_eq!(v["all"]["children"], json!(["front", "ungrouped"]));
        let web = &v["_meta"]["hostvars"]["web"];
        assert_eq!(web["ansible_port"], 2222);
        assert_eq!(web["ansible_user"], "debian");
        assert!(web["ansible_ssh_common_args"]
            .as_str()
            .unwrap()
            .contains("StrictHostKeyChecking=yes"));
    }

    #[test]
    fn ini_lists_hosts_then_groups() {
        let text = ini(&[host("web", &["front"], 2222)]);
        assert!(
            text.starts_with("web ansible_host=127.0.0.1 ansible_port=2222 ansible_user=debian")
        );
        assert!(text.contains("\n[front]\nweb\n"));
    }
}
