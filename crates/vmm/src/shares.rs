//! The shared folders of a VM (docs/shared-folders.md): one virtiofsd per share, started
//! while the VM is built (before confinement), each behind a vhost-user-fs PCI device, and
//! stopped when the VM ends.
//!
//! virtiofsd's socket lives in a private directory (mode 0700) under the temporary
//! directory only until the device has connected: socket and directory are gone before
//! the VMM is confined, so landlock needs no rule for them.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vhost_user::fs::Share;
use vhost_user::fs_device::{DaemonHandle, FsDevice, FsDeviceError};

use crate::device_manager::pci::DeviceSpec;

/// Errors starting the shares' devices.
#[derive(Debug, thiserror::Error)]
pub enum SharesError {
    #[error(transparent)]
    Virtiofsd(#[from] vhost_user::virtiofsd::VirtiofsdError),
    #[error("cannot create virtiofsd's socket directory {}: {source}", dir.display())]
    SocketDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Device(#[from] FsDeviceError),
}

/// The running virtiofsd of each share; stopped (connection closed, killed, reaped) when
/// dropped or by [`ShareDaemons::stop`].
#[derive(Default)]
pub struct ShareDaemons(Vec<Arc<DaemonHandle>>);

impl ShareDaemons {
    pub fn stop(&self) {
        for daemon in &self.0 {
            daemon.stop();
        }
    }
}

impl Drop for ShareDaemons {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start virtiofsd for each of `shares` and connect a device to it.
pub fn start(shares: &[Share]) -> Result<(Vec<DeviceSpec>, ShareDaemons), SharesError> {
    if shares.is_empty() {
        return Ok((Vec::new(), ShareDaemons::default()));
    }
    let binary = vhost_user::virtiofsd::find()?;
    let dir = std::env::temp_dir().join(format!("vessel-virtiofsd-{}", std::process::id()));
    // A directory left by an earlier process with the same pid holds nothing of ours.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| SharesError::SocketDir {
            dir: dir.clone(),
            source,
        })?;
    let started = start_each(&binary, shares, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    started
}

fn start_each(
    binary: &Path,
    shares: &[Share],
    dir: &Path,
) -> Result<(Vec<DeviceSpec>, ShareDaemons), SharesError> {
    let mut specs = Vec::with_capacity(shares.len());
    let mut daemons = ShareDaemons::default();
    for (index, share) in shares.iter().enumerate() {
        let socket = dir.join(format!("fs{index}.sock"));
        let device = FsDevice::start(binary, share.clone(), &socket)?;
        daemons.0.push(device.daemon());
        specs.push(DeviceSpec::new(Box::new(device)));
    }
    Ok((specs, daemons))
}
