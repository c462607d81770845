//! A pod's further containers in its one VM (Kubernetes through containerd's CRI: the
//! sandbox runs first, as the VM's main container, then the pod's containers). Each arrives
//! as `Container` on the main connection; the agent opens a connection of its own for it,
//! binds its root from the VM's share (containerd's snapshot, which the host mounted there)
//! under the pod's directory and runs it as the sandbox runs in `/rootfs`: chrooted, with
//! its own mounts, output, signals, stdin and exec'd processes over its connection. The
//! sandbox's end ends them, as the end of the VM would.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use nix::mount::{mount, MsFlags};

use crate::exec::{Connect, Execs};
use crate::protocol::{pod_root_source, AgentMessage, ContainerSpec, ProtocolError};
use crate::session::{
    self, control, report_start, run_to_exit, send, ExecContext, Input, SessionError, Writer,
};

/// Where the pod's containers go, and the ones that run.
pub(crate) struct PodContext {
    /// Container `id`'s root is `dir/id/rootfs`.
    pub dir: PathBuf,
    /// The VM's share, where the host put each container's root.
    pub share: PathBuf,
    /// Where each container's cgroup goes.
    pub cgroup_root: PathBuf,
    pub members: Execs,
}

/// Starts the pod's container `id` on a thread of its own (`context` is the main
/// connection's, with its [`PodContext`]).
pub(crate) fn start(id: String, spec: ContainerSpec, context: &ExecContext) {
    let Some(pod) = &context.pod else { return };
    let root = pod.dir.join(&id).join("rootfs");
    let (connect, members) = (context.connect.clone(), pod.members.clone());
    let (share, cgroup_root) = (pod.share.clone(), pod.cgroup_root.clone());
    pod.members.spawn(move || {
        let places = (share.as_path(), root.as_path(), cgroup_root.as_path());
        if let Err(e) = run(&id, &spec, places, &connect, &members) {
            println!("vessel-agent: container {id}: {e}");
        }
        // Detach the root and the volumes (the host's files) before removing what is left.
        if let Some(dir) = root.parent() {
            crate::teardown::remove_container_dir(dir);
        }
    });
}

/// One container: connect, say which it is, bind its root, start it, report its output
/// and exit; its exec'd processes end with it.
fn run(
    id: &str,
    spec: &ContainerSpec,
    (share, root, cgroup_root): (&Path, &Path, &Path),
    connect: &Connect,
    members: &Execs,
) -> Result<(), SessionError> {
    let stream = connect().map_err(ProtocolError::Io)?;
    let reader = stream.try_clone().map_err(ProtocolError::Io)?;
    let writer: Writer = Arc::new(Mutex::new(stream));
    send(&writer, &AgentMessage::Attach { id: id.into() })?;
    let spawned =
        bind_root(share, id, root).and_then(|()| session::start(root, spec, id, cgroup_root));
    let mut started = report_start(&writer, spawned)?;
    let pid = started.child.id();
    members.started(pid);
    let execs = Execs::default();
    let context = ExecContext {
        root: root.to_path_buf(),
        cgroup: started.cgroup.clone(),
        connect: connect.clone(),
        execs: execs.clone(),
        pod: None,
        writer: writer.clone(),
    };
    let input = Input::of(&mut started)?;
    let (done, _) = mpsc::channel();
    thread::spawn(move || control(reader, pid, input, Some(context), done));
    let status = run_to_exit(&mut started, &writer, &|| members.exited(pid))?;
    execs.end_all();
    if let Some(dir) = &started.cgroup {
        crate::cgroup::remove(dir);
    }
    send(&writer, &AgentMessage::Exited { status })?;
    Ok(())
}

/// Binds the container's root from the VM's share (`share/<id>/root`, containerd's
/// snapshot as the host mounted it) at `root`; the container's end detaches it
/// ([`crate::teardown::remove_container_dir`]), leaving the snapshot's files alone.
pub(crate) fn bind_root(share: &Path, id: &str, root: &Path) -> Result<(), SessionError> {
    let from = share.join(pod_root_source(id));
    if !from.is_dir() {
        let what = format!("{} is not in the VM's share", from.display());
        return Err(SessionError::Root(io::Error::new(
            io::ErrorKind::NotFound,
            what,
        )));
    }
    std::fs::create_dir_all(root).map_err(SessionError::Root)?;
    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(&from), root, None::<&str>, bind, None::<&str>)
        .map_err(|e| SessionError::Root(io::Error::from(e)))
}
