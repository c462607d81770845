//! A pod's further containers (Kubernetes through containerd's CRI): they run in the VM
//! their pod's sandbox booted. Create mounts the container's root (containerd's snapshot)
//! and binds it into that VM's share ([`crate::volumes::bind_root`]); Start asks the agent
//! for the container on the sandbox's stream, takes the connection the agent opens for it
//! and waits for the process to start. From then on that connection is the container's as
//! the sandbox's stream is the sandbox's (docs/kubernetes.md).

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use agent::protocol::HostMessage;

use crate::container::{Container, ContainerError, Status};
use crate::exec::{accept_attach, await_started};

/// Starts `me` in the VM of its pod's `sandbox`: the container's own connection once the
/// agent has started its process.
pub fn start_in(me: &Container, sandbox: &Arc<Container>) -> Result<UnixStream, ContainerError> {
    if sandbox.status().0 != Status::Running {
        return Err(ContainerError::State(format!(
            "the pod's sandbox {} is not running",
            sandbox.id
        )));
    }
    let (_one_at_a_time, listener) = me.attach_turn()?;
    let container = Box::new(me.container_spec().clone());
    sandbox.send(&HostMessage::Container {
        id: me.id.clone(),
        container,
    })?;
    let mut stream = accept_attach(&listener, &me.id)?;
    await_started(&mut stream)?;
    tracing::info!("container {}: runs in pod {}", me.id, sandbox.id);
    Ok(stream)
}
