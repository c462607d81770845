//! The shared folders of a VM (docs/shared-folders.md): one virtiofsd per share, started
//! while the VM is built (before confinement), each behind a vhost-user-fs PCI device, and
//! stopped when the VM ends. A VM built from a snapshot starts a new virtiofsd for each
//! share's directory (the host's, never the snapshot's) and loads the saved virtiofsd
//! state into it.
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
    #[error("share {tag:?}: the snapshot holds no virtio-fs state in virtio function {slot}")]
    NoSavedState { tag: String, slot: usize },
}

/// The running virtiofsd of each share; stopped (connection closed, killed, reaped) when
/// dropped or by [`ShareDaemons::stop`].
#[derive(Default)]
pub struct ShareDaemons {
    daemons: Vec<Arc<DaemonHandle>>,
    /// The first share whose virtiofsd cannot save its state.
    stateless: Option<String>,
}

impl ShareDaemons {
    pub fn stop(&self) {
        for daemon in &self.daemons {
            daemon.stop();
        }
    }

    /// What snapshots (and suspend, fork, migration) cannot save: a share whose virtiofsd
    /// lacks state transfer (older than 1.11).
    pub fn unsupported(&self) -> Option<String> {
        self.stateless.as_ref().map(|tag| {
            format!(
                "virtio-fs share {tag:?} (its virtiofsd cannot save its state; \
                 virtiofsd 1.11 or later can)"
            )
        })
    }
}

impl Drop for ShareDaemons {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Saved states of the shares' devices: the snapshot's virtio states and the slot (index
/// in them) of the first share.
pub type SavedShares<'a> = (&'a [virtio::VirtioPciState], usize);

/// Start virtiofsd for each of `shares` and connect a device to it; with `saved`, each
/// virtiofsd loads its share's saved state.
pub fn start(
    shares: &[Share],
    saved: Option<SavedShares<'_>>,
) -> Result<(Vec<DeviceSpec>, ShareDaemons), SharesError> {
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
    let started = start_each(&binary, shares, saved, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    started
}

fn start_each(
    binary: &Path,
    shares: &[Share],
    saved: Option<SavedShares<'_>>,
    dir: &Path,
) -> Result<(Vec<DeviceSpec>, ShareDaemons), SharesError> {
    let mut specs = Vec::with_capacity(shares.len());
    let mut daemons = ShareDaemons::default();
    for (index, share) in shares.iter().enumerate() {
        let socket = dir.join(format!("fs{index}.sock"));
        let device = match saved {
            None => FsDevice::start(binary, share.clone(), &socket)?,
            Some((states, first)) => {
                let slot = first + index;
                let state = match states.get(slot).map(|s| &s.device) {
                    Some(virtio::DeviceState::Fs(state)) => state,
                    _ => {
                        return Err(SharesError::NoSavedState {
                            tag: share.tag.clone(),
                            slot: slot + 1,
                        })
                    }
                };
                FsDevice::restore(binary, share.clone(), &socket, state)?
            }
        };
        if !device.state_transfer() && daemons.stateless.is_none() {
            daemons.stateless = Some(share.tag.clone());
        }
        daemons.daemons.push(device.daemon());
        specs.push(DeviceSpec::new(Box::new(device)));
    }
    Ok((specs, daemons))
}
