//! `PATCH /drives/{id}` and `PATCH /network-interfaces/{id}` on a running microVM, as
//! Firecracker takes them: a drive gets a new image (`path_on_host`, checked as a PUT
//! checks it and opened by the VMM as at boot) and/or new rate-limiter buckets; an
//! interface gets new rx/tx buckets. Buckets a body gives replace the device's, the others
//! stay; `GET /vm/config` shows the result.

use thiserror::Error;

use super::{ApiReply, ControlError, VmController};
use crate::model::{DriveUpdate, NetworkInterfaceUpdate};
use crate::validate::validate_drive;

#[derive(Debug, Error)]
pub enum PatchError {
    #[error("Invalid block device ID: {0} is not a drive of this microVM.")]
    NoSuchDrive(String),
    #[error("Invalid network interface ID: {0} is not an interface of this microVM.")]
    NoSuchInterface(String),
    #[error("drive update (patch): device error: {0}")]
    Drive(crate::BackendError),
    #[error("drive update (patch): device error: {0}")]
    InvalidDrive(#[source] crate::validate::ValidationError),
    #[error("network interface update (patch): device error: {0}")]
    Interface(crate::BackendError),
}

impl VmController {
    pub(super) fn patch_drive(&mut self, update: DriveUpdate) -> Result<ApiReply, ControlError> {
        self.require_started()?;
        let index = self
            .drives
            .iter()
            .position(|d| d.drive_id == update.drive_id)
            .ok_or_else(|| PatchError::NoSuchDrive(update.drive_id.clone()))?;
        let mut drive = self.drives[index].clone();
        if let Some(path) = &update.path_on_host {
            drive.path_on_host = path.clone();
            // A new image is detected anew (or refused) by the VMM.
            drive.format = None;
            validate_drive(&drive).map_err(PatchError::InvalidDrive)?;
        }
        if let Some(limiter) = &update.rate_limiter {
            drive.rate_limiter = Some(drive.rate_limiter.unwrap_or_default().updated_by(limiter));
        }
        let format = self
            .backend
            .update_drive(index, &drive, &update)
            .map_err(PatchError::Drive)?;
        if update.path_on_host.is_some() {
            drive.format = format;
        }
        self.drives[index] = drive;
        Ok(ApiReply::NoContent)
    }

    pub(super) fn patch_network_interface(
        &mut self,
        update: NetworkInterfaceUpdate,
    ) -> Result<ApiReply, ControlError> {
        self.require_started()?;
        let index = self
            .network_interfaces
            .iter()
            .position(|i| i.iface_id == update.iface_id)
            .ok_or_else(|| PatchError::NoSuchInterface(update.iface_id.clone()))?;
        self.backend
            .update_network_interface(index, &update)
            .map_err(PatchError::Interface)?;
        let iface = &mut self.network_interfaces[index];
        if let Some(limiter) = &update.rx_rate_limiter {
            iface.rx_rate_limiter = Some(
                iface
                    .rx_rate_limiter
                    .unwrap_or_default()
                    .updated_by(limiter),
            );
        }
        if let Some(limiter) = &update.tx_rate_limiter {
            iface.tx_rate_limiter = Some(
                iface
                    .tx_rate_limiter
                    .unwrap_or_default()
                    .updated_by(limiter),
            );
        }
        Ok(ApiReply::NoContent)
    }
}
