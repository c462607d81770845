//! The share's binds on the host's real mount table (root only: mounts), and the
//! propagation into a slave namespace set up as virtiofsd sets up its sandbox.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use super::*;

fn root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: mounting needs root");
    }
    root
}

/// A host directory with a file, an empty directory and a nested file.
fn host_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), "from the host\n").unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/g"), "g").unwrap();
    dir
}

fn volume(host: &Path, readonly: bool) -> Volume {
    Volume {
        host: host.to_path_buf(),
        readonly,
    }
}

fn is_mounted(path: &Path) -> bool {
    mount_points().iter().any(|m| m == path)
}

#[test]
fn binds_are_writable_or_read_only_and_removal_leaves_the_hosts_files() {
    if !root() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let share = base.path().join("share");
    let (rw, ro) = (host_dir(), host_dir());
    prepare(&share).unwrap();
    let volumes = [volume(rw.path(), false), volume(ro.path(), true)];
    bind_all(&share, "c1", &volumes).unwrap();
    assert_eq!(
        std::fs::read_to_string(share.join("c1/0/sub/g")).unwrap(),
        "g"
    );
    std::fs::write(share.join("c1/0/new"), "x").unwrap();
    assert_eq!(std::fs::read_to_string(rw.path().join("new")).unwrap(), "x");
    let err = std::fs::write(share.join("c1/1/new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert!(!staging_dir(&share).exists());
    // The guest's view has a read-only root: nothing lands on the host's /run.
    let err = std::fs::create_dir(share.join("c2")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let err = std::fs::write(share.join("c1/junk"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

    unbind_all(&share, "c1");
    assert!(!share.join("c1").exists());
    assert!(is_mounted(&share));
    remove(&share);
    assert!(!share.exists() && !is_mounted(&share));
    assert!(!work_dir(&share).exists() && !is_mounted(&work_dir(&share)));
    for host in [&rw, &ro] {
        assert!(host.path().join("f").is_file() && host.path().join("empty").is_dir());
        assert!(host.path().join("sub/g").is_file());
    }
}

#[test]
fn a_bind_that_is_not_a_directory_is_refused_and_undoes_the_others() {
    if !root() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let share = base.path().join("share");
    let host = host_dir();
    prepare(&share).unwrap();
    let volumes = [
        volume(host.path(), true),
        volume(&host.path().join("f"), false),
    ];
    let err = bind_all(&base.path().join("elsewhere"), "c1", &volumes).unwrap_err();
    assert!(matches!(err, VolumeError::NoShare(_)), "{err}");
    let err = bind_all(&share, "c1", &volumes).unwrap_err();
    assert!(matches!(err, VolumeError::NotADirectory(_)), "{err}");
    assert!(!share.join("c1").exists());
    assert!(!mount_points()
        .iter()
        .any(|m| m.starts_with(share.join("c1"))));
    remove(&share);
    assert!(host.path().join("f").is_file());
}

#[test]
fn binds_made_later_reach_a_slave_namespace_with_their_read_only_flag() {
    if !root() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let share = base.path().join("share");
    let host = host_dir();
    prepare(&share).unwrap();
    // As virtiofsd's sandbox: a new mount namespace, everything a slave, the shared
    // directory bound over itself; then it waits for a line before looking.
    let s = share.display();
    let script = format!(
        "mount --make-rslave / && mount --rbind {s} {s} && echo ready && read go && \
         cat {s}/c1/0/f {s}/c1/1/sub/g && touch {s}/c1/0/made-there && \
         if touch {s}/c1/1/x 2>/dev/null; then echo ro-written; else echo ro-refused; fi"
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "unchanged", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let volumes = [volume(host.path(), false), volume(host.path(), true)];
    bind_all(&share, "c1", &volumes).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(rest, "from the host\ngro-refused\n");
    assert!(host.path().join("made-there").is_file());
    remove(&share);
    assert!(!share.exists());
}

#[test]
fn a_pod_containers_root_is_bound_beside_its_volumes_and_unbound_with_them() {
    if !root() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let share = base.path().join("share");
    let (snapshot, vol) = (host_dir(), host_dir());
    let err = bind_root(&share, "c1", snapshot.path(), false).unwrap_err();
    assert!(matches!(err, VolumeError::NoShare(_)), "{err}");
    prepare(&share).unwrap();
    bind_root(&share, "c1", snapshot.path(), false).unwrap();
    bind_all(&share, "c1", &[volume(vol.path(), false)]).unwrap();
    // The guest writes into the snapshot, as runc's containers do.
    std::fs::write(share.join("c1/root/new"), "x").unwrap();
    assert_eq!(
        std::fs::read_to_string(snapshot.path().join("new")).unwrap(),
        "x"
    );
    assert!(share.join("c1/0/sub/g").is_file());
    // A read-only root is read-only on the host's side too.
    bind_root(&share, "c2", snapshot.path(), true).unwrap();
    let err = std::fs::write(share.join("c2/root/new2"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    unbind_all(&share, "c1");
    unbind_all(&share, "c2");
    assert!(!share.join("c1").exists() && !share.join("c2").exists());
    remove(&share);
    assert!(snapshot.path().join("sub/g").is_file() && snapshot.path().join("new").is_file());
}
