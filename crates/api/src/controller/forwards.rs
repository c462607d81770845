//! Run-time port forwards of a running VM's `nat` interface (vessel's extension): list,
//! add (with the listening socket the client passed), remove.

use std::os::fd::OwnedFd;

use thiserror::Error;

use super::{json, ApiReply, ControlError, VmController};
use crate::forward_model::PortForward;

/// A forward request the router understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardRequest {
    List {
        iface_id: String,
    },
    Add {
        iface_id: String,
        forward: PortForward,
    },
    Remove {
        iface_id: String,
        host_port: u16,
    },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ForwardRequestError {
    #[error("Invalid network interface ID - not found: {0}")]
    NoSuchInterface(String),
    #[error("Adding a forward needs the listening socket sent with the request (SCM_RIGHTS on the API socket): the VMM opens no sockets.")]
    NoListener,
    #[error("{0}")]
    Backend(crate::BackendError),
}

impl VmController {
    /// Serves `request`; `listener` is the socket the client passed with it, if any.
    pub(crate) fn forward_request(
        &mut self,
        request: ForwardRequest,
        listener: Option<OwnedFd>,
    ) -> Result<ApiReply, ControlError> {
        self.require_started()?;
        let iface_id = match &request {
            ForwardRequest::List { iface_id }
            | ForwardRequest::Add { iface_id, .. }
            | ForwardRequest::Remove { iface_id, .. } => iface_id,
        };
        let index = self
            .network_interfaces
            .iter()
            .position(|i| &i.iface_id == iface_id)
            .ok_or_else(|| ForwardRequestError::NoSuchInterface(iface_id.clone()))?;
        let backend = self.backend.clone();
        match request {
            ForwardRequest::List { .. } => json(
                &backend
                    .forwards(index)
                    .map_err(ForwardRequestError::Backend)?,
            ),
            ForwardRequest::Add { forward, .. } => {
                let listener = listener.ok_or(ForwardRequestError::NoListener)?;
                backend
                    .add_forward(index, &forward, listener)
                    .map_err(ForwardRequestError::Backend)?;
                Ok(ApiReply::NoContent)
            }
            ForwardRequest::Remove { host_port, .. } => {
                backend
                    .remove_forward(index, host_port)
                    .map_err(ForwardRequestError::Backend)?;
                Ok(ApiReply::NoContent)
            }
        }
    }
}
