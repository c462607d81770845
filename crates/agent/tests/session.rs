//! The agent's session on this host, without a VM: a busybox root in a temporary
//! directory, the host's half of the protocol on a socketpair. Needs root (mount, chroot)
//! and busybox-static; says so and passes when either is missing.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use agent::protocol::{
    read_frame, write_frame, AgentMessage, ContainerSpec, HostMessage, MountSpec, ProcessSpec,
};

fn busybox_root(dir: &Path) -> bool {
    let busybox = Path::new("/bin/busybox");
    if !nix::unistd::Uid::effective().is_root() || !busybox.exists() {
        println!("skipped: needs root and /bin/busybox (busybox-static)");
        return false;
    }
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    true
}

fn container(script: &str) -> ContainerSpec {
    ContainerSpec {
        process: ProcessSpec {
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into(), "GREETING=hi".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            rlimits: vec![agent::protocol::Rlimit {
                resource: "RLIMIT_NOFILE".into(),
                soft: 123,
                hard: 456,
            }],
            no_new_privileges: true,
        },
        hostname: None,
        mounts: vec![MountSpec {
            destination: "/proc".into(),
            fstype: "proc".into(),
            options: vec!["nosuid".into(), "noexec".into()],
        }],
        masked_paths: vec![],
        readonly_paths: vec![],
    }
}

/// Runs `container` through the agent; returns (stdout, stderr, exit status).
fn run(root: &Path, container: ContainerSpec) -> (String, String, u32) {
    let (host, guest) = UnixStream::pair().unwrap();
    let root_owned = root.to_path_buf();
    let agent = std::thread::spawn(move || {
        agent::session::serve(File::from(OwnedFd::from(guest)), &root_owned, "test".into())
    });
    let mut r = host.try_clone().unwrap();
    let mut w = host;
    let ready: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(
        ready,
        AgentMessage::Ready {
            kernel: "test".into()
        }
    );
    write_frame(
        &mut w,
        &HostMessage::Run {
            container: Box::new(container),
        },
    )
    .unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = loop {
        match read_frame::<_, AgentMessage>(&mut r).unwrap().unwrap() {
            AgentMessage::Started { pid } => assert!(pid > 1),
            AgentMessage::Stdout { data } => out.extend(data),
            AgentMessage::Stderr { data } => err.extend(data),
            AgentMessage::Exited { status } => break status,
            other => panic!("{other:?}"),
        }
    };
    write_frame(&mut w, &HostMessage::Shutdown).unwrap();
    assert_eq!(agent.join().unwrap().unwrap(), status);
    let _ = nix::mount::umount2(&root.join("proc"), nix::mount::MntFlags::MNT_DETACH);
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
        status,
    )
}

#[test]
fn the_agent_runs_the_process_in_its_root_and_reports_output_and_status() {
    let dir = tempfile::tempdir().unwrap();
    if !busybox_root(dir.path()) {
        return;
    }
    let script = "echo $GREETING; echo oops >&2; ulimit -n; test -e /proc/self/status && echo proc; ls /; exit 3";
    let (out, err, status) = run(dir.path(), container(script));
    assert_eq!(status, 3);
    assert_eq!(err, "oops\n");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["hi", "123", "proc"], "{out}");
    assert!(
        lines.contains(&"bin") && !lines.contains(&"usr"),
        "chrooted: {out}"
    );
}

#[test]
fn a_missing_program_is_an_error_message_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    if !busybox_root(dir.path()) {
        return;
    }
    let (host, guest) = UnixStream::pair().unwrap();
    let root = dir.path().to_path_buf();
    let agent = std::thread::spawn(move || {
        agent::session::serve(File::from(OwnedFd::from(guest)), &root, "test".into())
    });
    let mut r = host.try_clone().unwrap();
    let mut w = host;
    let _ready: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    let mut c = container("");
    c.process.args = vec!["no-such-program".into()];
    c.mounts.clear();
    write_frame(
        &mut w,
        &HostMessage::Run {
            container: Box::new(c),
        },
    )
    .unwrap();
    match read_frame::<_, AgentMessage>(&mut r).unwrap().unwrap() {
        AgentMessage::Error { message } => assert!(message.contains("not found"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(agent.join().unwrap().is_err());
}

#[test]
fn signals_from_the_host_reach_the_process() {
    let dir = tempfile::tempdir().unwrap();
    if !busybox_root(dir.path()) {
        return;
    }
    let (host, guest) = UnixStream::pair().unwrap();
    let root = dir.path().to_path_buf();
    let agent = std::thread::spawn(move || {
        agent::session::serve(File::from(OwnedFd::from(guest)), &root, "test".into())
    });
    let mut r = host.try_clone().unwrap();
    let mut w = host;
    let _ready: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    let mut c = container("echo up; exec busybox sleep 600");
    c.mounts.clear();
    write_frame(
        &mut w,
        &HostMessage::Run {
            container: Box::new(c),
        },
    )
    .unwrap();
    let started: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    assert!(
        matches!(started, AgentMessage::Started { .. }),
        "{started:?}"
    );
    let up: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(
        up,
        AgentMessage::Stdout {
            data: b"up\n".to_vec()
        }
    );
    // Out-of-range signals are ignored; SIGTERM ends the process.
    write_frame(&mut w, &HostMessage::Signal { signal: 0 }).unwrap();
    write_frame(&mut w, &HostMessage::Signal { signal: 99 }).unwrap();
    write_frame(&mut w, &HostMessage::Signal { signal: 15 }).unwrap();
    let exited: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(exited, AgentMessage::Exited { status: 128 + 15 });
    write_frame(&mut w, &HostMessage::Shutdown).unwrap();
    assert_eq!(agent.join().unwrap().unwrap(), 143);
}
