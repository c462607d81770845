//! The API's run-time port forwards on vessel's VMM: `api::PortForward` as `net::Forward`
//! and back, and the calls on a running VM's [`VmHandle`].

use std::os::fd::OwnedFd;

use api::{ForwardProtocol, LivePortForward, PortForward};
use vmm::VmHandle;

pub fn to_net(f: &PortForward) -> net::Forward {
    net::Forward {
        protocol: match f.protocol {
            ForwardProtocol::Tcp => net::Protocol::Tcp,
            ForwardProtocol::Udp => net::Protocol::Udp,
        },
        host_addr: f.host_addr,
        host_port: f.host_port,
        guest_addr: f.guest_addr,
        guest_port: f.guest_port,
    }
}

pub fn from_net(f: &net::Forward) -> PortForward {
    PortForward {
        protocol: match f.protocol {
            net::Protocol::Tcp => ForwardProtocol::Tcp,
            net::Protocol::Udp => ForwardProtocol::Udp,
        },
        host_addr: f.host_addr,
        host_port: f.host_port,
        guest_addr: f.guest_addr,
        guest_port: f.guest_port,
    }
}

pub fn list(handle: &VmHandle, index: usize) -> Result<Vec<LivePortForward>, String> {
    let live = handle.forwards(index).map_err(|e| e.to_string())?;
    Ok(live
        .iter()
        .map(|l| LivePortForward {
            forward: from_net(&l.forward),
            connections: l.connections,
        })
        .collect())
}

pub fn add(
    handle: &VmHandle,
    index: usize,
    forward: &PortForward,
    listener: OwnedFd,
) -> Result<(), String> {
    handle
        .add_forward(index, to_net(forward), listener)
        .map_err(|e| e.to_string())
}

pub fn remove(handle: &VmHandle, index: usize, host_port: u16) -> Result<(), String> {
    handle
        .remove_forward(index, host_port)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_convert_both_ways() {
        let f = PortForward {
            protocol: ForwardProtocol::Udp,
            host_addr: Some(std::net::Ipv4Addr::new(0, 0, 0, 0)),
            host_port: 5353,
            guest_addr: None,
            guest_port: 53,
        };
        assert_eq!(from_net(&to_net(&f)), f);
    }
}
