//! The agent's session on this host, without a VM: a busybox root in a temporary
//! directory, the host's half of the protocol on a socketpair. Needs root (mount, chroot)
//! and busybox-static; says so and passes when either is missing.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use agent::protocol::{
    read_frame, write_frame, AgentMessage, ContainerSpec, HostMessage, MountSpec, ProcessSpec,
};

/// The agent serving `guest` with `root` on a thread of its own; the host's ends of the
/// connections it opens for exec'd processes arrive on the receiver.
fn spawn_agent(
    guest: UnixStream,
    root: &Path,
) -> (
    std::thread::JoinHandle<Result<u32, agent::session::SessionError>>,
    mpsc::Receiver<UnixStream>,
) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let connect: agent::exec::Connect = Arc::new(move || {
        let (host, guest) = UnixStream::pair()?;
        let _ = tx.lock().unwrap().send(host);
        Ok(File::from(OwnedFd::from(guest)))
    });
    let root = root.to_path_buf();
    let agent = std::thread::spawn(move || {
        // SAFETY: unshare has no memory-safety preconditions: this thread, the threads it
        // starts and their processes get a mount namespace of their own, so the agent's
        // mounts go away with them.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } == 0 {
            let private = nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE;
            let none: Option<&str> = None;
            let _ = nix::mount::mount(none, "/", none, private, none);
        }
        // A stand-in for the guest's cgroup v2 root: the agent's groups are directories
        // there, and a process joins one by its pid written into `cgroup.procs`.
        // Outside the root, which a test may make read-only.
        let cgroup_root = tempfile::tempdir().unwrap();
        std::fs::write(cgroup_root.path().join("cgroup.controllers"), "cpu memory").unwrap();
        let places = agent::session::Places {
            root: root.clone(),
            pod_dir: root.join(".pod"),
            share: root.join(".share"),
            cgroup_root: cgroup_root.path().to_path_buf(),
        };
        agent::session::serve(
            File::from(OwnedFd::from(guest)),
            &places,
            "test".into(),
            connect,
        )
    });
    (agent, rx)
}

/// An agent serving a busybox root on a thread, past its `Ready`: the host's reading and
/// writing ends, the agent's thread, and the host's ends of exec'd processes' connections.
type Session = (
    UnixStream,
    UnixStream,
    std::thread::JoinHandle<Result<u32, agent::session::SessionError>>,
    mpsc::Receiver<UnixStream>,
);

/// A [`Session`] in `dir`; `None` (the test passes, saying why) where it cannot run.
fn session(dir: &Path) -> Option<Session> {
    if !busybox_root(dir) {
        return None;
    }
    let (host, guest) = UnixStream::pair().unwrap();
    let (agent, execs) = spawn_agent(guest, dir);
    let mut r = host.try_clone().unwrap();
    let _ready: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    Some((r, host, agent, execs))
}

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
            terminal: false,
            oom_score_adj: Some(100),
        },
        hostname: None,
        mounts: vec![MountSpec {
            destination: "/proc".into(),
            fstype: "proc".into(),
            options: vec!["nosuid".into(), "noexec".into()],
            source: None,
        }],
        masked_paths: vec![],
        readonly_paths: vec![],
        readonly_root: false,
        files: vec![],
        limits: None,
    }
}

/// Runs `container` through the agent; returns (stdout, stderr, exit status).
fn run(root: &Path, container: ContainerSpec) -> (String, String, u32) {
    let (host, guest) = UnixStream::pair().unwrap();
    let (agent, _execs) = spawn_agent(guest, root);
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
    let Some((mut r, mut w, agent, _execs)) = session(dir.path()) else {
        return;
    };
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
    let Some((mut r, mut w, agent, _execs)) = session(dir.path()) else {
        return;
    };
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
    // Stats are answered on the container's connection while it runs (from its cgroup: in
    // this stand-in hierarchy the kernel's counter files are absent, so all read 0).
    write_frame(&mut w, &HostMessage::Stats).unwrap();
    let stats: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(
        stats,
        AgentMessage::Stats {
            stats: Box::default()
        }
    );
    // Updates are answered there too: a limit the kernel takes, and one it cannot.
    let limits = |memory_max| agent::protocol::Limits {
        memory_max: Some(memory_max),
        ..Default::default()
    };
    write_frame(
        &mut w,
        &HostMessage::Update {
            limits: limits(64 << 20),
        },
    )
    .unwrap();
    let done: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(done, AgentMessage::Done { error: None });
    write_frame(&mut w, &HostMessage::Update { limits: limits(1) }).unwrap();
    match read_frame(&mut r).unwrap().unwrap() {
        AgentMessage::Done { error: Some(e) } => assert!(e.contains("under 1 MiB"), "{e}"),
        other => panic!("{other:?}"),
    }
    // Out-of-range signals are ignored; SIGTERM ends the process.
    write_frame(&mut w, &HostMessage::Signal { signal: 0 }).unwrap();
    write_frame(&mut w, &HostMessage::Signal { signal: 99 }).unwrap();
    write_frame(&mut w, &HostMessage::Signal { signal: 15 }).unwrap();
    let exited: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(exited, AgentMessage::Exited { status: 128 + 15 });
    write_frame(&mut w, &HostMessage::Shutdown).unwrap();
    assert_eq!(agent.join().unwrap().unwrap(), 143);
}

/// What arrives on an exec'd process's connection until its exit: (stdout, exit status).
fn exec_output(conn: &mut UnixStream) -> (String, u32) {
    let mut out = Vec::new();
    loop {
        match read_frame::<_, AgentMessage>(conn).unwrap().unwrap() {
            AgentMessage::Started { pid } => assert!(pid > 1),
            AgentMessage::Stdout { data } => out.extend(data),
            AgentMessage::Exited { status } => return (String::from_utf8(out).unwrap(), status),
            other => panic!("{other:?}"),
        }
    }
}

/// Runs the container's process `script` (without mounts) and waits for its `Started`.
fn run_waiting(w: &mut UnixStream, r: &mut UnixStream, script: &str) {
    let mut c = container(script);
    c.mounts.clear();
    let run = HostMessage::Run {
        container: Box::new(c),
    };
    write_frame(w, &run).unwrap();
    let started: AgentMessage = read_frame(r).unwrap().unwrap();
    assert!(
        matches!(started, AgentMessage::Started { .. }),
        "{started:?}"
    );
}

fn exec(w: &mut UnixStream, id: &str, script: &str) {
    let process = Box::new(container(script).process);
    let id = id.to_string();
    write_frame(w, &HostMessage::Exec { id, process }).unwrap();
}

#[test]
fn exec_runs_more_processes_in_the_root_each_on_its_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut r, mut w, agent, execs)) = session(dir.path()) else {
        return;
    };
    // The container's process waits for a line on its stdin.
    run_waiting(&mut w, &mut r, "read line; echo got $line");

    exec(&mut w, "e1", "echo from exec $GREETING; ls /; exit 5");
    let mut e1 = execs.recv().unwrap();
    let attach: AgentMessage = read_frame(&mut e1).unwrap().unwrap();
    assert_eq!(attach, AgentMessage::Attach { id: "e1".into() });
    let (out, status) = exec_output(&mut e1);
    assert_eq!(status, 5);
    assert!(out.starts_with("from exec hi\n"), "{out}");
    assert!(!out.contains("usr"), "chrooted: {out}");

    // A program that is not there: an error on its connection, the container goes on.
    let mut process = Box::new(container("").process);
    process.args = vec!["no-such-program".into()];
    let id = "e2".to_string();
    write_frame(&mut w, &HostMessage::Exec { id, process }).unwrap();
    let mut e2 = execs.recv().unwrap();
    let _attach: AgentMessage = read_frame(&mut e2).unwrap().unwrap();
    match read_frame::<_, AgentMessage>(&mut e2).unwrap().unwrap() {
        AgentMessage::Error { message } => assert!(message.contains("not found"), "{message}"),
        other => panic!("{other:?}"),
    }

    // Signals on an exec's connection reach that process only.
    exec(&mut w, "e3", "echo up; exec busybox sleep 600");
    let mut e3 = execs.recv().unwrap();
    let _attach: AgentMessage = read_frame(&mut e3).unwrap().unwrap();
    let _started: AgentMessage = read_frame(&mut e3).unwrap().unwrap();
    let up: AgentMessage = read_frame(&mut e3).unwrap().unwrap();
    assert_eq!(
        up,
        AgentMessage::Stdout {
            data: b"up\n".to_vec()
        }
    );
    write_frame(&mut e3, &HostMessage::Signal { signal: 15 }).unwrap();
    assert_eq!(exec_output(&mut e3), (String::new(), 143));

    // One still running when the container's process ends is killed and reports it first.
    exec(&mut w, "e4", "echo up; exec busybox sleep 600");
    let mut e4 = execs.recv().unwrap();
    let _attach: AgentMessage = read_frame(&mut e4).unwrap().unwrap();
    let _started: AgentMessage = read_frame(&mut e4).unwrap().unwrap();
    let _up: AgentMessage = read_frame(&mut e4).unwrap().unwrap();
    write_frame(
        &mut w,
        &HostMessage::Stdin {
            data: b"x\n".to_vec(),
        },
    )
    .unwrap();
    assert_eq!(exec_output(&mut e4), (String::new(), 128 + 9));
    let out: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(
        out,
        AgentMessage::Stdout {
            data: b"got x\n".to_vec()
        }
    );
    let exited: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(exited, AgentMessage::Exited { status: 0 });
    write_frame(&mut w, &HostMessage::Shutdown).unwrap();
    assert_eq!(agent.join().unwrap().unwrap(), 0);
}

#[test]
fn a_process_on_a_terminal_gets_its_size_and_input_and_one_output_stream() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut r, mut w, agent, _execs)) = session(dir.path()) else {
        return;
    };
    let script = "[ -t 0 ] && echo is-a-tty; read line; stty size; echo got $line; echo err >&2";
    let mut c = container(script);
    c.mounts.clear();
    c.process.terminal = true;
    let run = HostMessage::Run {
        container: Box::new(c),
    };
    write_frame(&mut w, &run).unwrap();
    let started: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    assert!(
        matches!(started, AgentMessage::Started { .. }),
        "{started:?}"
    );
    write_frame(
        &mut w,
        &HostMessage::Resize {
            rows: 30,
            cols: 100,
        },
    )
    .unwrap();
    // Closing stdin does not end a terminal's input: the line still arrives.
    write_frame(&mut w, &HostMessage::CloseStdin).unwrap();
    let data = b"hello\n".to_vec();
    write_frame(&mut w, &HostMessage::Stdin { data }).unwrap();
    let mut out = Vec::new();
    let status = loop {
        match read_frame::<_, AgentMessage>(&mut r).unwrap().unwrap() {
            AgentMessage::Stdout { data } => out.extend(data),
            AgentMessage::Exited { status } => break status,
            other => panic!("{other:?}"),
        }
    };
    let out = String::from_utf8_lossy(&out).replace('\r', "");
    assert_eq!(status, 0, "{out}");
    for line in ["is-a-tty", "hello", "30 100", "got hello", "err"] {
        assert!(out.lines().any(|l| l == line), "{line:?} in {out:?}");
    }
    write_frame(&mut w, &HostMessage::Shutdown).unwrap();
    assert_eq!(agent.join().unwrap().unwrap(), 0);
}

/// Puts a busybox root holding one more file, `marker`, where the host binds pod
/// container `id`'s snapshot: `<root>/.share/<id>/root` in these tests.
fn root_in_share(root: &Path, id: &str, marker: &str) -> std::path::PathBuf {
    let dir = root.join(".share").join(id).join("root");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    std::fs::write(dir.join(marker), "hi").unwrap();
    dir
}

/// Starts the pod's container `id` running `script` on the main connection `w`, its root
/// in the share under `dir`; its own connection (from `conns`, past its `Attach`).
fn pod_container(
    (w, dir): (&mut UnixStream, &Path),
    conns: &mpsc::Receiver<UnixStream>,
    id: &str,
    script: &str,
) -> UnixStream {
    root_in_share(dir, id, &format!("marker-{id}"));
    let mut c = container(script);
    c.mounts.clear();
    let container = Box::new(c);
    write_frame(
        w,
        &HostMessage::Container {
            id: id.into(),
            container,
        },
    )
    .unwrap();
    let mut conn = conns.recv().unwrap();
    let attach: AgentMessage = read_frame(&mut conn).unwrap().unwrap();
    assert_eq!(attach, AgentMessage::Attach { id: id.into() });
    conn
}

#[test]
fn a_pods_containers_get_their_own_roots_connections_and_execs_and_end_with_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut r, mut w, agent, conns)) = session(dir.path()) else {
        return;
    };
    run_waiting(&mut w, &mut r, "read line; echo sandbox $line");

    let script = "ls /; echo in c2 $GREETING; echo w > /written; exit 7";
    let mut c2 = pod_container((&mut w, dir.path()), &conns, "c2", script);
    let (out, status) = exec_output(&mut c2);
    assert_eq!(status, 7);
    assert_eq!(out, "bin\nmarker-c2\nin c2 hi\n");

    // One that runs on: an exec on its connection runs in its root.
    let mut c3 = pod_container(
        (&mut w, dir.path()),
        &conns,
        "c3",
        "echo up; exec busybox sleep 600",
    );
    let _started: AgentMessage = read_frame(&mut c3).unwrap().unwrap();
    let up: AgentMessage = read_frame(&mut c3).unwrap().unwrap();
    let data = b"up\n".to_vec();
    assert_eq!(up, AgentMessage::Stdout { data });
    exec(&mut c3, "e1", "ls /");
    let mut e1 = conns.recv().unwrap();
    let attach: AgentMessage = read_frame(&mut e1).unwrap().unwrap();
    assert_eq!(attach, AgentMessage::Attach { id: "e1".into() });
    assert_eq!(exec_output(&mut e1), ("bin\nmarker-c3\n".into(), 0));

    // The sandbox's end ends the pod's containers: c3 reports being killed.
    let data = b"x\n".to_vec();
    write_frame(&mut w, &HostMessage::Stdin { data }).unwrap();
    assert_eq!(exec_output(&mut c3), (String::new(), 128 + 9));
    let out: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    let data = b"sandbox x\n".to_vec();
    assert_eq!(out, AgentMessage::Stdout { data });
    let exited: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(exited, AgentMessage::Exited { status: 0 });
    write_frame(&mut w, &HostMessage::Shutdown).unwrap();
    assert_eq!(agent.join().unwrap().unwrap(), 0);
    assert!(
        !dir.path().join(".pod/c2").exists(),
        "c2's directory is gone"
    );
    // Its root was the snapshot's: the container's write is there, and nothing was removed.
    let snapshot = dir.path().join(".share/c2/root");
    assert_eq!(
        std::fs::read_to_string(snapshot.join("written")).unwrap(),
        "w\n"
    );
    assert!(snapshot.join("marker-c2").exists() && snapshot.join("bin/busybox").exists());
}

#[test]
fn a_root_missing_from_the_share_fails_the_containers_start_not_the_pod() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut r, mut w, agent, conns)) = session(dir.path()) else {
        return;
    };
    run_waiting(&mut w, &mut r, "read line; echo sandbox $line");
    let container = Box::new(container("true"));
    write_frame(
        &mut w,
        &HostMessage::Container {
            id: "bad".into(),
            container,
        },
    )
    .unwrap();
    let mut conn = conns.recv().unwrap();
    let _attach: AgentMessage = read_frame(&mut conn).unwrap().unwrap();
    match read_frame::<_, AgentMessage>(&mut conn).unwrap().unwrap() {
        AgentMessage::Error { message } => {
            assert!(
                message.contains("bad/root is not in the VM's share"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    let data = b"x\n".to_vec();
    write_frame(&mut w, &HostMessage::Stdin { data }).unwrap();
    let _out: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    let exited: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(exited, AgentMessage::Exited { status: 0 });
    write_frame(&mut w, &HostMessage::Shutdown).unwrap();
    assert_eq!(agent.join().unwrap().unwrap(), 0);
}

#[test]
fn copied_in_files_and_a_read_only_root() {
    let dir = tempfile::tempdir().unwrap();
    if !busybox_root(dir.path()) {
        return;
    }
    let script = "busybox cat /etc/hosts; echo x >> /etc/hosts && echo hosts-rw; \
                  (echo y >> /etc/resolv.conf) || echo resolv-ro; \
                  (echo z > /new) || echo root-ro";
    let mut c = container(script);
    c.mounts.clear();
    c.readonly_root = true;
    let file = |destination: &str, data: &[u8], readonly| agent::protocol::FileSpec {
        destination: destination.into(),
        data: data.to_vec(),
        readonly,
    };
    c.files = vec![
        file("/etc/hosts", b"127.0.0.1 pod\n", false),
        file("/etc/resolv.conf", b"nameserver 10.0.2.3\n", true),
    ];
    let (out, err, status) = run(dir.path(), c);
    assert_eq!(status, 0, "{err}");
    assert_eq!(
        out, "127.0.0.1 pod\nhosts-rw\nresolv-ro\nroot-ro\n",
        "{err}"
    );
}
