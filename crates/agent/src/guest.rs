//! The microVM around the agent: the vsock stream to the host, the kernel's release, and
//! powering off.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};

use crate::protocol::AGENT_PORT;

/// The host's context ID.
const HOST_CID: u32 = 2;

/// Errors preparing the guest.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("connect to the host over vsock (port {AGENT_PORT}) for {0:?}: {1}")]
    Connect(Duration, nix::Error),
}

/// Connects to the shim (the host, [`AGENT_PORT`]), retrying while the vsock driver comes
/// up, for at most `patience`.
pub fn connect_host(patience: Duration) -> Result<File, GuestError> {
    let start = Instant::now();
    let addr = VsockAddr::new(HOST_CID, AGENT_PORT);
    loop {
        let attempt = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .and_then(|fd: OwnedFd| connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).map(|()| fd));
        match attempt {
            Ok(fd) => return Ok(File::from(fd)),
            Err(e) if start.elapsed() >= patience => return Err(GuestError::Connect(patience, e)),
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Flushes the file systems and powers the VM off (as PID 1); returns when that fails.
pub fn power_off() {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
}
