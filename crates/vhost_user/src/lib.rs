//! vhost-user backends: vessel's own virtio device models ([`virtio::blk::Block`],
//! [`virtio::net::Net`], any [`virtio::VirtioDevice`]) served to another VMM — QEMU, Cloud
//! Hypervisor — over a unix socket. The same device code runs behind vessel's PCI
//! transport; this crate is the second transport.
//!
//! * Messages are parsed and answered by the rust-vmm `vhost` crate
//!   ([`vhost::vhost_user::BackendReqHandler`]); `handler` passes them to the session.
//! * `session::Core` holds the device and the connected frontend's session: its memory
//!   ([`memory::GuestRam`], mapped from the fds of SET_MEM_TABLE), the vrings, negotiated
//!   features. Everything the frontend sends is validated; a bad message fails, never
//!   the process.
//! * A worker thread per connection (`worker`, an `event-manager` subscriber) waits on
//!   the kick eventfds (and the device backend's fd, e.g. a NIC's) and runs
//!   `VirtioDevice::process_queue` over vessel's own [`virtio::Queue`]; used buffers are
//!   signalled on the call eventfd as the driver asked (EVENT_IDX or the NO_INTERRUPT
//!   flag).
//! * [`Backend::serve`] accepts one frontend at a time; when it disconnects, its
//!   session (maps, rings, eventfds) is dropped, the device reset (a disk flushes) and
//!   the next connection accepted.
//!
//! With QEMU (checked with Debian's 7.2 under TCG):
//!
//! ```text
//! vessel vhost-user-blk --socket /run/disk.sock --disk disk.qcow2 &
//! qemu-system-x86_64 -object memory-backend-memfd,id=mem,size=512M,share=on \
//!     -numa node,memdev=mem -chardev socket,id=c,path=/run/disk.sock \
//!     -device vhost-user-blk-pci,chardev=c,num-queues=1 ...
//! vessel vhost-user-net --socket /run/nic.sock --nic nat &
//!     ... -chardev socket,id=n,path=/run/nic.sock -netdev vhost-user,id=net0,chardev=n \
//!     -device virtio-net-pci,netdev=net0,vectors=0
//! ```
//!
//! * Guest memory must be shared (`share=on`): the backend maps it.
//! * The device models have one queue (pair): with more than one vCPU QEMU asks for one
//!   queue per vCPU unless told `num-queues=1`.
//! * QEMU 7.2 under TCG crashes (SIGSEGV in `msix_set_vector_notifiers`, from
//!   `vhost_net_start`) when a vhost-user-net device uses MSI-X, whatever the backend:
//!   `vectors=0` avoids it.
//! * Guest memory must come from a memfd sealed against shrinking (`F_SEAL_SHRINK`),
//!   which QEMU's `memory-backend-memfd` is by default: a frontend that shrank the file
//!   behind its memory after SET_MEM_TABLE would make the backend fault on access
//!   (SIGBUS). Unsealed files (`memory-backend-file`, `seal=off`) get an error reply.
//!
//! ```text
//! let listener = vhost_user::bind(Path::new("/run/disk.sock"))?;
//! let backend = Backend::new(Box::new(Block::new(image, "serial")), 1, None)?;
//! backend.serve(&listener, stop_fd.as_fd())?;   // returns when stop_fd is readable
//! ```
//!
//! The other direction — vessel as the vhost-user *frontend* of a device served by another
//! process — is [`frontend`] (the protocol; [`backend_state`] saves and loads the
//! backend's state), [`fs`] / [`fs_device`] / [`virtiofsd`] (shared folders served by
//! virtiofsd; docs/shared-folders.md).

pub mod backend_state;
pub mod frontend;
pub mod fs;
pub mod fs_device;
mod handler;
pub mod log;
pub mod memory;
mod server;
mod session;
pub mod virtiofsd;
mod vring;
mod worker;

pub use handler::RequestHandler;
pub use server::{bind, Backend, Connection, ConnectionEnd, ServerError};
pub use session::{offered_protocol_features, SessionError, MAX_QUEUES};

#[cfg(test)]
mod tests;
