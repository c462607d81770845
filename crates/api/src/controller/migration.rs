//! Live migration requests: sending needs a started VM; progress and cancellation are
//! also answered while a send is in progress (the server calls the backend for them
//! without waiting for the controller, which the send holds).

use thiserror::Error;

use super::{ApiReply, ControlError, VmController};
use crate::migration_model::MigrationSendParams;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MigrationRequestError {
    #[error("Migration error: {0}")]
    Send(crate::BackendError),
    #[error("Migration error: no migration is in progress.")]
    NothingToCancel,
    #[error("Migration error: {0}")]
    Status(crate::BackendError),
}

impl VmController {
    pub(super) fn send_migration(
        &mut self,
        params: &MigrationSendParams,
    ) -> Result<ApiReply, ControlError> {
        self.require_started()?;
        self.backend
            .send_migration(params)
            .map_err(MigrationRequestError::Send)?;
        Ok(ApiReply::NoContent)
    }
}

/// `GET /migration` straight from the backend.
pub fn migration_status(backend: &dyn crate::VmmBackend) -> Result<ApiReply, ControlError> {
    let status = backend
        .migration_status()
        .map_err(MigrationRequestError::Status)?;
    Ok(ApiReply::Json(serde_json::to_vec(&status)?))
}

/// `PUT /migration/cancel` straight from the backend.
pub fn cancel_migration(backend: &dyn crate::VmmBackend) -> Result<ApiReply, ControlError> {
    match backend.cancel_migration() {
        Ok(true) => Ok(ApiReply::NoContent),
        Ok(false) => Err(MigrationRequestError::NothingToCancel.into()),
        Err(e) => Err(MigrationRequestError::Status(e).into()),
    }
}
