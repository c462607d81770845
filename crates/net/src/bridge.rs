//! `bridged:IFACE` and `hostonly:NAME`: a new tap enslaved to a Linux bridge. For
//! host-only the bridge `vho-NAME` is created when missing, with the host's address
//! 192.168.56.1/24 on it (VirtualBox's host-only network), so VMs and the host talk and
//! nothing is routed further. Both need CAP_NET_ADMIN.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::tap::{IfReqFlags, TapBackend, TapError};

/// The host's address on a host-only network.
pub const HOSTONLY_HOST_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 56, 1);
pub const HOSTONLY_PREFIX_LEN: u8 = 24;
/// Tap names the kernel picks for bridged NICs.
const TAP_PATTERN: &str = "vsl%d";
const SIOCBRADDBR: libc::c_ulong = 0x89a0;
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("{what} {name:?} needs CAP_NET_ADMIN (run as root or give vessel cap_net_admin)")]
    NoNetAdmin { what: &'static str, name: String },
    #[error("{what} {name:?}: {source}")]
    Ioctl {
        what: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("host-only network name {0:?} is too long (11 characters at most)")]
    NameTooLong(String),
}

fn ifreq(name: &str) -> IfReqFlags {
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    let n = name.len().min(libc::IFNAMSIZ - 1);
    req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    req
}

/// An AF_INET socket for interface ioctls.
fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Run one interface ioctl on `req`, mapping EPERM to [`BridgeError::NoNetAdmin`].
fn ioctl<T>(
    sock: &OwnedFd,
    request: libc::c_ulong,
    req: &mut T,
    what: &'static str,
    name: &str,
) -> Result<(), BridgeError> {
    // SAFETY: every request used here takes a `struct ifreq` (or a name string for
    // SIOCBRADDBR, which `IfReqFlags` starts with), which `req` is and outlives the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut T) };
    if r < 0 {
        let source = io::Error::last_os_error();
        return Err(match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => BridgeError::NoNetAdmin {
                what,
                name: name.to_owned(),
            },
            _ => BridgeError::Ioctl {
                what,
                name: name.to_owned(),
                source,
            },
        });
    }
    Ok(())
}

fn set_up(sock: &OwnedFd, name: &str) -> Result<(), BridgeError> {
    let mut req = ifreq(name);
    ioctl(sock, libc::SIOCGIFFLAGS, &mut req, "reading flags of", name)?;
    req.flags |= libc::IFF_UP as libc::c_short;
    ioctl(sock, libc::SIOCSIFFLAGS, &mut req, "bringing up", name)
}

#[repr(C)]
struct IfReqIndex {
    name: [u8; libc::IFNAMSIZ],
    index: libc::c_int,
    _pad: [u8; 20],
}

#[repr(C)]
struct IfReqAddr {
    name: [u8; libc::IFNAMSIZ],
    addr: libc::sockaddr_in,
    _pad: [u8; 8],
}

fn set_addr(
    sock: &OwnedFd,
    name: &str,
    request: libc::c_ulong,
    addr: Ipv4Addr,
) -> Result<(), BridgeError> {
    let mut req = IfReqAddr {
        name: ifreq(name).name,
        addr: libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(addr).to_be(),
            },
            sin_zero: [0; 8],
        },
        _pad: [0; 8],
    };
    ioctl(sock, request, &mut req, "setting the address of", name)
}

/// A new tap, up, enslaved to the existing bridge `bridge`.
pub fn bridged(bridge: &str) -> Result<TapBackend, BridgeError> {
    let tap = TapBackend::open(TAP_PATTERN, true)?;
    let sock = control_socket().map_err(|source| BridgeError::Ioctl {
        what: "opening a control socket for",
        name: bridge.to_owned(),
        source,
    })?;
    set_up(&sock, tap.name())?;
    let mut idx = IfReqIndex {
        name: ifreq(tap.name()).name,
        index: 0,
        _pad: [0; 20],
    };
    ioctl(
        &sock,
        libc::SIOCGIFINDEX,
        &mut idx,
        "looking up",
        tap.name(),
    )?;
    let mut add = IfReqIndex {
        name: ifreq(bridge).name,
        index: idx.index,
        _pad: [0; 20],
    };
    ioctl(
        &sock,
        SIOCBRADDIF,
        &mut add,
        "adding a port to bridge",
        bridge,
    )?;
    Ok(tap)
}

/// The bridge of host-only network `name`.
pub fn hostonly_bridge(name: &str) -> Result<String, BridgeError> {
    if name.len() > 11 {
        return Err(BridgeError::NameTooLong(name.to_owned()));
    }
    Ok(format!("vho-{name}"))
}

/// A new tap on host-only network `name`, creating its bridge (with the host's address)
/// when it does not exist yet.
pub fn hostonly(name: &str) -> Result<TapBackend, BridgeError> {
    let bridge = hostonly_bridge(name)?;
    let sock = control_socket().map_err(|source| BridgeError::Ioctl {
        what: "opening a control socket for",
        name: bridge.clone(),
        source,
    })?;
    let mut probe = ifreq(&bridge);
    let exists = ioctl(&sock, libc::SIOCGIFFLAGS, &mut probe, "probing", &bridge).is_ok();
    if !exists {
        let mut req = ifreq(&bridge);
        ioctl(
            &sock,
            SIOCBRADDBR,
            &mut req.name,
            "creating bridge",
            &bridge,
        )?;
        set_addr(&sock, &bridge, libc::SIOCSIFADDR, HOSTONLY_HOST_ADDR)?;
        let mask = Ipv4Addr::from(u32::MAX << (32 - HOSTONLY_PREFIX_LEN));
        set_addr(&sock, &bridge, libc::SIOCSIFNETMASK, mask)?;
        set_up(&sock, &bridge)?;
    }
    bridged(&bridge)
}
