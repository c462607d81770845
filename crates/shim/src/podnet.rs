//! A pod's network: the VM's NIC in the network namespace the CNI plugins set up for the
//! pod, as Kata Containers connects it (its "tcfilter" model).
//!
//! The CNI plugins give the namespace an interface (a veth, say) with the pod's IPv4
//! address, routes and MTU. The shim reads them there, adds a tap (`vsltap0`), and
//! redirects every frame arriving on either one out of the other (an ingress qdisc and a
//! u32 match-all filter with a mirred redirect on each). vessel runs in the namespace with
//! a virtio-net NIC on that tap and the interface's MAC, and the guest's init gives the
//! guest's interface the pod's address, MTU and default route (`vessel.net=` on the
//! kernel's command line). The guest then is the pod on the network: nothing of the
//! host's stack is in the path.
//!
//! The work in the namespace is done by iproute2's `ip` and `tc` under util-linux's
//! `nsenter`, what every Kubernetes node has.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// The tap the shim adds to the pod's namespace.
pub const TAP: &str = "vsltap0";

/// Errors connecting the VM to its pod's network.
#[derive(Debug, thiserror::Error)]
pub enum PodNetError {
    #[error("run {command} in the pod's network namespace {netns}: {reason}")]
    Command {
        command: String,
        netns: PathBuf,
        reason: String,
    },
    #[error("the pod's network namespace {0}: {1}")]
    Read(PathBuf, String),
}

/// The pod's interface as the CNI plugins configured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNic {
    /// Its name in the namespace (the veth's end).
    pub name: String,
    pub mac: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
}

impl PodNic {
    /// What the guest's init reads: `vessel.net=MAC,ADDRESS/PREFIX,GATEWAY,MTU` (an empty
    /// gateway without a default route).
    pub fn kernel_arg(&self) -> String {
        let gateway = self.gateway.map(|g| g.to_string()).unwrap_or_default();
        format!(
            "vessel.net={},{}/{},{gateway},{}",
            self.mac, self.address, self.prefix, self.mtu
        )
    }

    /// vessel's `--nic`: the tap, with the interface's MAC.
    pub fn nic_arg(&self) -> String {
        format!("tap:{TAP},mac={}", self.mac)
    }
}

#[derive(Debug, Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    link_type: String,
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Debug, Deserialize)]
struct AddrInfo {
    family: String,
    #[serde(default)]
    local: String,
    #[serde(default)]
    prefixlen: u8,
}

#[derive(Debug, Deserialize)]
struct Route {
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dev: String,
}

/// Runs `program args` in `netns`; its standard output.
fn run_in(netns: &Path, program: &str, args: &[&str]) -> Result<String, PodNetError> {
    let command = format!("{program} {}", args.join(" "));
    let failed = |reason: String| PodNetError::Command {
        command: command.clone(),
        netns: netns.to_path_buf(),
        reason,
    };
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg(program)
        .args(args)
        .output()
        .map_err(|e| failed(format!("nsenter: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(failed(format!("{}: {err}", out.status)));
    }
    String::from_utf8(out.stdout).map_err(|e| failed(e.to_string()))
}

/// The pod's interface in `netns`: the one Ethernet interface with an IPv4 address (none:
/// a namespace without the CNI's interface, the VM gets no NIC).
pub fn discover(netns: &Path) -> Result<Option<PodNic>, PodNetError> {
    let links = run_in(netns, "ip", &["-json", "address", "show"])?;
    let routes = run_in(netns, "ip", &["-json", "-4", "route", "show", "default"])?;
    parse(&links, &routes).map_err(|e| PodNetError::Read(netns.to_path_buf(), e))
}

/// [`discover`] on `ip -json`'s answers.
fn parse(links: &str, routes: &str) -> Result<Option<PodNic>, String> {
    let links: Vec<Link> = serde_json::from_str(links).map_err(|e| format!("ip address: {e}"))?;
    let routes: Vec<Route> = serde_json::from_str(routes).map_err(|e| format!("ip route: {e}"))?;
    let mut found = links.into_iter().filter_map(|link| {
        let inet = link.addr_info.iter().find(|a| a.family == "inet")?;
        let address = inet.local.parse::<Ipv4Addr>().ok()?;
        (link.link_type == "ether" && link.ifname != TAP).then_some((link, address))
    });
    let Some((link, address)) = found.next() else {
        return Ok(None);
    };
    if let Some((other, _)) = found.next() {
        return Err(format!(
            "two interfaces with IPv4 addresses ({} and {}): vessel connects one",
            link.ifname, other.ifname
        ));
    }
    let prefix = link
        .addr_info
        .iter()
        .find(|a| a.family == "inet")
        .map_or(32, |a| a.prefixlen);
    if prefix > 32 || link.mac_is_bad() || !(68..=65535).contains(&link.mtu) {
        return Err(format!("interface {link:?}"));
    }
    let gateway = routes
        .iter()
        .find(|r| r.dev == link.ifname)
        .and_then(|r| r.gateway.as_deref())
        .map(|g| {
            g.parse::<Ipv4Addr>()
                .map_err(|e| format!("gateway {g}: {e}"))
        })
        .transpose()?;
    Ok(Some(PodNic {
        name: link.ifname,
        mac: link.address,
        address,
        prefix,
        gateway,
        mtu: link.mtu,
    }))
}

impl Link {
    fn mac_is_bad(&self) -> bool {
        let parts: Vec<&str> = self.address.split(':').collect();
        parts.len() != 6
            || parts
                .iter()
                .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

/// Adds the tap to `netns` and redirects frames between it and the pod's interface; on an
/// error what was added is taken away again.
pub fn connect(netns: &Path, nic: &PodNic) -> Result<(), PodNetError> {
    let mtu = nic.mtu.to_string();
    let steps: [&[&str]; 2] = [
        &["ip", "tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr"],
        &["ip", "link", "set", "dev", TAP, "mtu", &mtu, "up"],
    ];
    let redirect = |from: &str, to: &str| -> Result<(), PodNetError> {
        run_in(netns, "tc", &["qdisc", "add", "dev", from, "ingress"])?;
        let filter = [
            "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match",
            "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
        ];
        run_in(netns, "tc", &filter).map(drop)
    };
    let done = steps
        .iter()
        .try_for_each(|step| run_in(netns, step[0], &step[1..]).map(drop))
        .and_then(|()| redirect(&nic.name, TAP))
        .and_then(|()| redirect(TAP, &nic.name));
    if done.is_err() {
        disconnect(netns, nic);
    }
    done
}

/// Takes the tap and the pod interface's redirect away (what is not there is fine: the
/// namespace may be gone with the pod).
pub fn disconnect(netns: &Path, nic: &PodNic) {
    let _ = run_in(netns, "tc", &["qdisc", "del", "dev", &nic.name, "ingress"]);
    let _ = run_in(netns, "ip", &["link", "del", "dev", TAP]);
}

#[cfg(test)]
mod tests;
