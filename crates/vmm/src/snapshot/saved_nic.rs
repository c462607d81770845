//! The machine's network interfaces and virtio-console as a snapshot records them: enough
//! to open each NIC's backend again on load (a fresh passt with the same forwards, the tap
//! reopened by name, the switch or NAT network rejoined) and to reopen the console's output.
//! Read back from an untrusted file, so each is checked by the `--nic` parser's rules.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SnapshotError;

/// Most NICs a snapshot may list.
pub const MAX_NICS: usize = 32;
/// Most port forwards per NIC a snapshot may list.
pub const MAX_FORWARDS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SavedNicMode {
    Nat,
    NatNetwork(String),
    Internal(String),
    HostOnly(String),
    Bridged(String),
    Tap(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SavedProtocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedForward {
    pub protocol: SavedProtocol,
    pub host_addr: Option<Ipv4Addr>,
    pub host_port: u16,
    pub guest_addr: Option<Ipv4Addr>,
    pub guest_port: u16,
}

/// A virtio-net interface as the VM had it configured, with the MAC it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedNic {
    pub mode: SavedNicMode,
    pub mac: [u8; 6],
    pub forwards: Vec<SavedForward>,
    pub host_loopback: bool,
}

/// The MAC a NIC gets: its configured one, else a default one per slot.
pub fn effective_mac(index: usize, nic: &net::NicConfig) -> [u8; 6] {
    nic.mac.unwrap_or_else(|| net::default_mac(index as u8))
}

/// `cfg` with every NIC's MAC set ([`effective_mac`]).
pub fn with_nic_macs(cfg: &crate::config::VmConfig) -> crate::config::VmConfig {
    let mut cfg = cfg.clone();
    for (index, nic) in cfg.machine.nics.iter_mut().enumerate() {
        nic.mac = Some(effective_mac(index, nic));
    }
    cfg
}

impl SavedNic {
    /// The record of `nic`, which was given `mac`.
    pub fn new(nic: &net::NicConfig, mac: [u8; 6]) -> Self {
        use net::NicMode as M;
        let mode = match &nic.mode {
            M::Nat => SavedNicMode::Nat,
            M::NatNetwork(n) => SavedNicMode::NatNetwork(n.clone()),
            M::Internal(n) => SavedNicMode::Internal(n.clone()),
            M::HostOnly(n) => SavedNicMode::HostOnly(n.clone()),
            M::Bridged(n) => SavedNicMode::Bridged(n.clone()),
            M::Tap(n) => SavedNicMode::Tap(n.clone()),
        };
        let forwards = nic
            .forwards
            .iter()
            .map(|f| SavedForward {
                protocol: match f.protocol {
                    net::Protocol::Tcp => SavedProtocol::Tcp,
                    net::Protocol::Udp => SavedProtocol::Udp,
                },
                host_addr: f.host_addr,
                host_port: f.host_port,
                guest_addr: f.guest_addr,
                guest_port: f.guest_port,
            })
            .collect();
        SavedNic {
            mode,
            mac,
            forwards,
            host_loopback: nic.host_loopback,
        }
    }

    /// The NIC configuration to open on load (checked by the `--nic` rules).
    pub fn to_config(&self) -> Result<net::NicConfig, SnapshotError> {
        use net::NicMode as M;
        if self.forwards.len() > MAX_FORWARDS {
            return Err(SnapshotError::Invalid(format!(
                "a NIC with {} port forwards (at most {MAX_FORWARDS})",
                self.forwards.len()
            )));
        }
        let mode = match &self.mode {
            SavedNicMode::Nat => M::Nat,
            SavedNicMode::NatNetwork(n) => M::NatNetwork(n.clone()),
            SavedNicMode::Internal(n) => M::Internal(n.clone()),
            SavedNicMode::HostOnly(n) => M::HostOnly(n.clone()),
            SavedNicMode::Bridged(n) => M::Bridged(n.clone()),
            SavedNicMode::Tap(n) => M::Tap(n.clone()),
        };
        let forwards = self
            .forwards
            .iter()
            .map(|f| net::Forward {
                protocol: match f.protocol {
                    SavedProtocol::Tcp => net::Protocol::Tcp,
                    SavedProtocol::Udp => net::Protocol::Udp,
                },
                host_addr: f.host_addr,
                host_port: f.host_port,
                guest_addr: f.guest_addr,
                guest_port: f.guest_port,
            })
            .collect();
        let config = net::NicConfig {
            mode,
            mac: Some(self.mac),
            forwards,
            host_loopback: self.host_loopback,
            // Limits are not saved: the VM that loads the snapshot sets its own.
            rx_limit: Default::default(),
            tx_limit: Default::default(),
        };
        config
            .validate()
            .map_err(|e| SnapshotError::Invalid(format!("network interface: {e}")))?;
        Ok(config)
    }
}

/// The virtio-console's output file named by an (untrusted) snapshot is opened for
/// appending on load: it may be absent (it is created), or a regular file, never a
/// symbolic link or anything else.
pub fn check_console_file(path: &Path) -> Result<(), SnapshotError> {
    let bad = |what: &str| {
        SnapshotError::Invalid(format!("virtio-console output {}: {what}", path.display()))
    };
    if !path.is_absolute() {
        return Err(bad("not an absolute path"));
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(bad(&e.to_string())),
        Ok(m) if m.file_type().is_symlink() => Err(bad("is a symbolic link")),
        Ok(m) if !m.is_file() => Err(bad("is not a regular file")),
        Ok(_) => Ok(()),
    }
}

/// The console output paths a snapshot records are absolute.
pub fn console_path(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nic_record_round_trips_and_is_checked() {
        let nic = net::parse_nic("nat,forward=tcp:127.0.0.1:2222-:22,host-loopback=on").unwrap();
        let saved = SavedNic::new(&nic, [0x52, 0x54, 0, 1, 2, 3]);
        let back = saved.to_config().unwrap();
        assert_eq!(back.forwards, nic.forwards);
        assert_eq!(back.mac, Some([0x52, 0x54, 0, 1, 2, 3]));
        assert_eq!(SavedNic::new(&back, saved.mac), saved);

        let mut bad = saved.clone();
        bad.mode = SavedNicMode::Tap("../../x".into());
        assert!(bad
            .to_config()
            .unwrap_err()
            .to_string()
            .contains("invalid name"));
        let mut bad = saved.clone();
        bad.mode = SavedNicMode::Internal("lab".into());
        assert!(bad
            .to_config()
            .unwrap_err()
            .to_string()
            .contains("forward="));
        let mut bad = saved.clone();
        bad.mac = [0xff; 6];
        assert!(bad.to_config().unwrap_err().to_string().contains("MAC"));
        let mut bad = saved;
        bad.forwards = vec![bad.forwards[0].clone(); MAX_FORWARDS + 1];
        assert!(bad
            .to_config()
            .unwrap_err()
            .to_string()
            .contains("port forwards"));
    }

    #[test]
    fn console_outputs_must_be_plain_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("console.log");
        check_console_file(&file).unwrap();
        std::fs::write(&file, b"x").unwrap();
        check_console_file(&file).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(check_console_file(&link)
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
        assert!(check_console_file(dir.path())
            .unwrap_err()
            .to_string()
            .contains("regular"));
        assert!(check_console_file(Path::new("/dev/null")).is_err());
        assert!(check_console_file(Path::new("rel.log")).is_err());
    }
}
