//! A pod's further containers in its one VM (Kubernetes through containerd's CRI: the
//! sandbox runs first, as the VM's main container, then the pod's containers). Each arrives
//! as `Container` on the main connection; the agent opens a connection of its own for it,
//! receives its root there as a tar archive, unpacks it under the pod's directory and runs
//! it as the sandbox runs in `/rootfs`: chrooted, with its own mounts, output, signals,
//! stdin and exec'd processes over its connection. The sandbox's end ends them, as the end
//! of the VM would.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use crate::exec::{Connect, Execs};
use crate::protocol::{read_frame, AgentMessage, ContainerSpec, HostMessage, ProtocolError};
use crate::session::{
    self, control, report_start, run_to_exit, send, ExecContext, Input, SessionError, Writer,
};

/// Where the pod's containers go, and the ones that run.
pub(crate) struct PodContext {
    /// Container `id`'s root is `dir/id/rootfs`.
    pub dir: PathBuf,
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
    let cgroup_root = pod.cgroup_root.clone();
    pod.members.spawn(move || {
        let places = (root.as_path(), cgroup_root.as_path());
        if let Err(e) = run(&id, &spec, places, &connect, &members) {
            println!("vessel-agent: container {id}: {e}");
        }
        // The container's root lives in the guest's memory: give it back, without
        // following its mounts (volumes are the host's directories).
        if let Some(dir) = root.parent() {
            crate::teardown::remove_container_dir(dir);
        }
    });
}

/// One container: connect, say which it is, take its root, start it, report its output
/// and exit; its exec'd processes end with it.
fn run(
    id: &str,
    spec: &ContainerSpec,
    (root, cgroup_root): (&Path, &Path),
    connect: &Connect,
    members: &Execs,
) -> Result<(), SessionError> {
    let stream = connect().map_err(ProtocolError::Io)?;
    let mut reader = stream.try_clone().map_err(ProtocolError::Io)?;
    let writer: Writer = Arc::new(Mutex::new(stream));
    send(&writer, &AgentMessage::Attach { id: id.into() })?;
    let spawned =
        receive_root(&mut reader, root).and_then(|()| session::start(root, spec, id, cgroup_root));
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

/// Unpacks the tar archive the host sends on `conn` into `root` (created), with the
/// archive's modes and owners, and reads on to its `RootEnd`.
pub(crate) fn receive_root(conn: &mut File, root: &Path) -> Result<(), SessionError> {
    std::fs::create_dir_all(root).map_err(SessionError::Root)?;
    let mut frames = RootFrames {
        conn,
        chunk: Vec::new(),
        at: 0,
        ended: false,
    };
    let mut archive = tar::Archive::new(&mut frames);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let unpacked = archive.unpack(root);
    // What follows the archive's end (its padding) is read too, so that the next frame on
    // the connection is the host's next message.
    let drained = io::copy(&mut frames, &mut io::sink());
    unpacked.and(drained.map(drop)).map_err(|e| {
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text = format!("{text}: {c}");
            cause = c.source();
        }
        SessionError::Root(std::io::Error::new(e.kind(), text))
    })
}

/// The bytes of `RootData` frames up to `RootEnd`, as a reader.
struct RootFrames<'a> {
    conn: &'a mut File,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Read for RootFrames<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.chunk.len() && !self.ended {
            match read_frame::<_, HostMessage>(self.conn).map_err(io::Error::other)? {
                Some(HostMessage::RootData { data }) => (self.chunk, self.at) = (data, 0),
                Some(HostMessage::RootEnd) => self.ended = true,
                Some(other) => {
                    let what = format!("{other:?} inside the container's root");
                    return Err(io::Error::new(io::ErrorKind::InvalidData, what));
                }
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
        let rest = self.chunk.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}
