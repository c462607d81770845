//! A pod's further containers (Kubernetes through containerd's CRI): they run in the VM
//! their pod's sandbox booted. Create packs the container's root into a tar archive in the
//! bundle; Start asks the agent for the container on the sandbox's stream, takes the
//! connection the agent opens for it, sends the root there and waits for the process to
//! start. From then on that connection is the container's as the sandbox's stream is the
//! sandbox's (docs/kubernetes.md).

use std::fs::File;
use std::io::{BufWriter, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use agent::protocol::{write_frame, HostMessage, MAX_CHUNK};

use crate::container::{Container, ContainerError, Status};
use crate::exec::{accept_attach, await_started};

/// The container's packed root, in its bundle.
pub const ROOT_TAR: &str = "vessel-root.tar";

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> ContainerError {
    move |e| ContainerError::State(format!("{what}: {e}"))
}

/// Writes everything under `root` to `out` as a tar archive (modes, owners and times
/// kept; symbolic links as links; device nodes and FIFOs as such).
pub fn pack_root(root: &Path, out: &Path) -> Result<(), ContainerError> {
    let what = format!(
        "pack the container's root {} into {}",
        root.display(),
        out.display()
    );
    let file = File::create(out).map_err(io_error(what.clone()))?;
    let mut archive = tar::Builder::new(BufWriter::new(file));
    archive.follow_symlinks(false);
    archive
        .append_dir_all(".", root)
        .map_err(io_error(what.clone()))?;
    archive
        .into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .map_err(io_error(what))?;
    Ok(())
}

/// Starts `me` in the VM of its pod's `sandbox`: the container's own connection once the
/// agent has started its process.
pub fn start_in(
    me: &Container,
    sandbox: &Arc<Container>,
    root_tar: &Path,
) -> Result<UnixStream, ContainerError> {
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
    send_root(&mut stream, root_tar)?;
    await_started(&mut stream)?;
    tracing::info!("container {}: runs in pod {}", me.id, sandbox.id);
    Ok(stream)
}

/// Sends the packed root as `RootData` frames, then `RootEnd`.
fn send_root(stream: &mut UnixStream, root_tar: &Path) -> Result<(), ContainerError> {
    let what = format!("send the container's root {}", root_tar.display());
    let mut file = File::open(root_tar).map_err(io_error(what.clone()))?;
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        let n = file.read(&mut buf).map_err(io_error(what.clone()))?;
        if n == 0 {
            break;
        }
        let data = buf.get(..n).unwrap_or_default().to_vec();
        write_frame(stream, &HostMessage::RootData { data })?;
    }
    Ok(write_frame(stream, &HostMessage::RootEnd)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_is_packed_with_its_links_fifos_modes_and_owners() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o750);
        std::fs::set_permissions(root.join("bin/tool"), mode).unwrap();
        std::os::unix::fs::symlink("tool", root.join("bin/sh")).unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let out = dir.path().join(ROOT_TAR);
        pack_root(&root, &out).unwrap();
        let mut archive = tar::Archive::new(File::open(&out).unwrap());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            let path = entry.path().unwrap().display().to_string();
            let link = entry.link_name().unwrap().map(|l| l.display().to_string());
            seen.push((path, h.entry_type(), h.mode().unwrap() & 0o7777, link));
        }
        let find = |p: &str| seen.iter().find(|s| s.0 == p).cloned();
        let tool = find("./bin/tool").or(find("bin/tool")).expect("bin/tool");
        assert_eq!((tool.1, tool.2), (tar::EntryType::Regular, 0o750));
        let sh = find("./bin/sh").or(find("bin/sh")).expect("bin/sh");
        assert_eq!((sh.1, sh.3), (tar::EntryType::Symlink, Some("tool".into())));
        let fifo = find("./fifo").or(find("fifo")).expect("fifo");
        assert_eq!(fifo.1, tar::EntryType::Fifo);
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = pack_root(&dir.path().join("nope"), &dir.path().join(ROOT_TAR)).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
