//! vessel's REST API: Firecracker's API shape (paths, JSON bodies, status codes, fault
//! messages) served over HTTP/1.1 on a unix socket, so existing Firecracker clients and SDKs
//! can drive vessel.
//!
//! The crate owns the pre-boot configuration and the instance state machine
//! ([`VmController`]); the VMM plugs in through [`VmmBackend`], which it asks to start,
//! pause, resume, send Ctrl+Alt+Del, snapshot, change a running VM's drives and network
//! interfaces (their port forwards too), or point its log elsewhere. [`serve`] runs the server on its own thread:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # struct MyVmm;
//! # impl api::VmmBackend for MyVmm {
//! #     fn start(&self, _: &api::VmConfigSnapshot) -> Result<(), api::BackendError> { Ok(()) }
//! #     fn send_ctrl_alt_del(&self) -> Result<(), api::BackendError> { Ok(()) }
//! #     fn pause(&self) -> Result<(), api::BackendError> { Ok(()) }
//! #     fn resume(&self) -> Result<(), api::BackendError> { Ok(()) }
//! # }
//! let handle = api::serve(
//!     std::path::Path::new("/tmp/vessel.sock"),
//!     Arc::new(MyVmm),
//!     api::ServerOptions::default(),
//! )?;
//! // ... the VM runs; clients configure and start it through the socket ...
//! handle.shutdown()?;
//! # Ok::<(), api::ApiError>(())
//! ```

mod backend;
pub mod balloon_model;
mod controller;
mod fd_stream;
pub mod forward_model;
pub mod migration_model;
pub mod model;
mod root_device;
mod routes;
mod server;
pub mod snapshot_model;
mod socket;
mod validate;

pub use backend::{BackendError, VmmBackend};
pub use balloon_model::{Balloon, BalloonStatistics, BalloonStatsUpdate, BalloonUpdate};
pub use controller::balloon::{BalloonRequest, BalloonRequestError};
pub use controller::forwards::{ForwardRequest, ForwardRequestError};
pub use controller::logger::{LogLevel, LoggerConfig};
pub use controller::metrics::{MetricsConfig, METRICS_FLUSH_INTERVAL};
pub use controller::mmds::{MmdsAttachment, MmdsConfig, MmdsRequestError, MmdsVersion};
pub use controller::{
    ApiReply, ApiRequest, ControlError, InstanceIdentity, VmController, MAX_DRIVES,
    MAX_NETWORK_INTERFACES,
};
pub use fd_stream::send_with_fd;
pub use forward_model::{ForwardProtocol, LivePortForward, PortForward};
pub use migration_model::{MigrationCancelParams, MigrationSendParams};
pub use model::*;
pub use root_device::{root_args, with_root_args};
pub use routes::{parse_request, RouteError};
pub use server::{
    serve, ApiError, ApiServerHandle, ServerOptions, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_READ_TIMEOUT,
};
pub use snapshot_model::{
    MemoryBackend, MemoryBackendType, SnapshotCreateParams, SnapshotLoadParams, SnapshotType,
};
pub use socket::SocketError;
pub use validate::{
    validate_network_interface, ValidationError, MAX_BOOT_ARGS_LEN, MAX_HOST_DEV_NAME_LEN,
    MAX_ID_LEN, MAX_MEM_SIZE_MIB, MAX_VCPU_COUNT, MIN_MEM_SIZE_MIB,
};
