//! vhost-user backends: vessel's own virtio device models ([`virtio::blk::Block`],
//! [`virtio::net::Net`], any [`virtio::VirtioDevice`]) served to another VMM — QEMU, Cloud
//! Hypervisor — over a unix socket. The same device code runs behind vessel's PCI
//! transport; this crate is the second transport.
//!
//! * Messages are parsed and answered by the rust-vmm `vhost` crate
//!   ([`vhost::vhost_user::BackendReqHandler`]); [`handler`] passes them to the session.
//! * `session::Core` holds the device and the connected frontend's session: its memory
//!   ([`memory::GuestRam`], mapped from the fds of SET_MEM_TABLE), the vrings, negotiated
//!   features. Everything the frontend sends is validated; a bad message fails, never
//!   the process.
//! * A worker thread per connection ([`worker`]) waits on the kick eventfds (and the
//!   device backend's fd, e.g. a NIC's) and runs `VirtioDevice::process_queue` over
//!   vessel's own [`virtio::Queue`]; used buffers are signalled on the call eventfd as the
//!   driver asked (EVENT_IDX or the NO_INTERRUPT flag).
//! * [`Backend::serve`] accepts one frontend at a time; when it disconnects, its
//!   session (maps, rings, eventfds) is dropped, the device reset (a disk flushes) and
//!   the next connection accepted.
//!
//! ```text
//! let listener = vhost_user::bind(Path::new("/run/disk.sock"))?;
//! let backend = Backend::new(Box::new(Block::new(image, "serial")), 1, None)?;
//! backend.serve(&listener, stop_fd.as_fd())?;   // returns when stop_fd is readable
//! ```

mod handler;
pub mod memory;
mod server;
mod session;
mod vring;
mod worker;

pub use handler::RequestHandler;
pub use server::{bind, Backend, Connection, ConnectionEnd, ServerError};
pub use session::{offered_protocol_features, SessionError, MAX_QUEUES};

#[cfg(test)]
mod tests;
