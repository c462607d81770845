//! Network backends for vessel's virtio-net device ([`virtio::net::Net`]): what is on the
//! other end of the guest's wire.
//!
//! * `nat` — [`passt::PasstBackend`]: rootless user-mode NAT by a `passt` helper process.
//! * `natnet:NAME` — [`natnet::NatNetBackend`]: VMs behind one NAT on one subnet (a
//!   switch between them, a passt per VM with its own leased address).
//! * `internal:NAME` — [`switch::SwitchPort`]: a switch between the VMs on NAME only.
//! * `tap:NAME` — [`tap::TapBackend`]: a host tap device (CAP_NET_ADMIN).
//! * `bridged:IFACE` — [`bridge`]: a new tap on a host bridge (CAP_NET_ADMIN).
//! * `hostonly:NAME` — [`hostonly::HostOnlyBackend`]: a tap on a host-only bridge and a
//!   DHCP server for the VM (CAP_NET_ADMIN).
//!
//! * [`mmds_nic::with_mmds`] — any of them with the MMDS (Firecracker's metadata service) on
//!   the wire.
//! * [`forward_nic::with_forwards`] — `nat` with the relay of port forwards added at run time
//!   ([`forward_relay`]).
//!
//! Parse a `--nic` value with [`parse_nic`], open its backend with [`open_backend`], give
//! it to `virtio::net::Net::new`, and let the I/O thread poll [`Backend::as_raw_fd`].

pub mod bridge;
pub mod config;
pub mod dhcp;
pub mod diverting_nic;
pub mod forward_frames;
pub mod forward_nic;
pub mod forward_relay;
pub mod handshake;
pub mod hostonly;
pub mod lease;
pub mod mmds_nic;
pub mod natnet;
pub mod passt;
pub mod pollset;
pub mod relay;
pub mod stream;
pub mod switch;
pub mod tap;

pub use config::{
    default_mac, parse_forward, parse_mac, parse_nic, parse_nic_mode, ConfigError, Forward,
    NicConfig, NicMode, Protocol,
};
/// Frames in, frames out, one pollable fd: every backend implements it.
pub use virtio::net::NetBackend as Backend;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Passt(#[from] passt::PasstError),
    #[error(transparent)]
    Switch(#[from] switch::SwitchError),
    #[error(transparent)]
    NatNet(#[from] natnet::NatNetError),
    #[error(transparent)]
    Tap(#[from] tap::TapError),
    #[error(transparent)]
    Bridge(#[from] bridge::BridgeError),
    #[error(transparent)]
    HostOnly(#[from] hostonly::HostOnlyError),
    #[error(transparent)]
    Mmds(#[from] mmds_nic::MmdsNicError),
    #[error(transparent)]
    Forwards(#[from] forward_nic::ForwardNicError),
}

/// What passt runs with for a nat or natnet `--nic`.
fn passt_options(config: &NicConfig) -> passt::PasstOptions {
    let mut options = passt::PasstOptions::new(config.forwards.clone());
    options.host_loopback = config.host_loopback;
    options
}

/// Open the backend a `--nic` asks for.
pub fn open_backend(config: &NicConfig) -> Result<Box<dyn Backend>, NetError> {
    Ok(match &config.mode {
        NicMode::Nat => Box::new(passt::PasstBackend::spawn(&passt_options(config))?),
        NicMode::Internal(name) => Box::new(switch::SwitchPort::join(name)?),
        NicMode::Tap(name) => Box::new(tap::TapBackend::open(name, true)?),
        NicMode::NatNetwork(name) => Box::new(natnet::NatNetBackend::join(
            name,
            config.mac,
            passt_options(config),
        )?),
        NicMode::HostOnly(name) => Box::new(hostonly::HostOnlyBackend::join(name, config.mac)?),
        NicMode::Bridged(iface) => Box::new(bridge::bridged(iface)?),
    })
}
