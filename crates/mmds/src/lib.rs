//! MMDS, Firecracker's microVM metadata service: the JSON document the API puts
//! (`PUT/PATCH/GET /mmds`), served to the guest over HTTP at a link-local address
//! (169.254.169.254 by default) on the NICs `PUT /mmds/config` names, with V2 session
//! tokens. Knows nothing of virtio or KVM: the NIC side hands it Ethernet frames.
//!
//! * [`store`] — the document: put, JSON merge patch, size limit, reads by path.
//! * [`token`] — V2 session tokens (HMAC under a per-VM random key, expiry checked).
//! * [`http`] — the bounded HTTP/1.x request parser and responses.
//! * [`service`] — [`Mmds`]: Firecracker's answer to each guest request.
//! * [`endpoint`] — [`Endpoint`]: ARP/IPv4/TCP (smoltcp) on frames, one request per
//!   connection.

pub mod endpoint;
pub mod http;
pub mod service;
pub mod store;
pub mod token;
pub mod wire;

pub use endpoint::{is_for_mmds, Endpoint, EndpointError, DEFAULT_IPV4, MMDS_MAC};
pub use service::{Mmds, MmdsVersion};
pub use store::{DataStore, OutputFormat, StoreError, DEFAULT_SIZE_LIMIT};
pub use token::TokenError;

/// One VM's MMDS, shared by the API (which writes the document) and the NICs' endpoints.
pub type SharedMmds = std::sync::Arc<std::sync::Mutex<Mmds>>;
