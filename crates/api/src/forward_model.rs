//! vessel's extension for port forwards added to a running `nat` interface
//! (`PUT/GET /network-interfaces/{id}/forwards`, `DELETE .../forwards/{host_port}`): the
//! bodies. The client binds the host port itself and passes the listening socket with the
//! PUT request (SCM_RIGHTS on the API socket), so the VMM opens no sockets.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardProtocol {
    #[default]
    Tcp,
    /// Refused at run time (passt keeps UDP forwards; give them when the VM starts).
    Udp,
}

/// One forward: host `host_addr:host_port` to the guest's `guest_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForward {
    #[serde(default)]
    pub protocol: ForwardProtocol,
    /// The host address the passed socket is bound to; 127.0.0.1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_addr: Option<Ipv4Addr>,
    pub host_port: u16,
    /// The guest's address; the interface's guest address (10.0.2.15) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_addr: Option<Ipv4Addr>,
    pub guest_port: u16,
}

/// A forward as `GET .../forwards` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LivePortForward {
    #[serde(flatten)]
    pub forward: PortForward,
    /// Connections open through it now.
    pub connections: usize,
}
