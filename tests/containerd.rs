//! vessel as a containerd runtime (docs/kubernetes.md): Debian's containerd 1.6 runs a
//! container with `--runtime io.containerd.vessel.v2`; the container's process runs in a
//! vessel microVM booting Debian's kernel (the nested-host profile on kvm_pvm hosts), its
//! output and exit status come back through the shim, and nothing is left afterwards.
//! Skipped, saying why, only where containerd is not installed (scripts/test.sh installs it).

mod common;

use std::path::Path;
use std::time::Duration;

use common::containerd::{
    busybox_image, mounts_under, processes_mentioning, skip_reason, Containerd,
};
use common::nested::debian_guest;

const IMAGE: &str = "docker.io/library/vessel-busybox:latest";
/// A whole boot of the Debian kernel where ring 0 is emulated takes minutes.
const RUN_TIMEOUT: Duration = Duration::from_secs(40 * 60);

#[test]
fn ctr_runs_a_container_in_a_vessel_vm_and_gets_its_output_and_exit_status() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let (kernel, _) = debian_guest();
    let guest_dir = kernel.parent().unwrap().to_path_buf();
    let kernel_version = std::fs::read_to_string(guest_dir.join("kernel.version")).unwrap();
    let ctd = Containerd::start(&guest_dir);
    let image = ctd.dir.path().join("image.tar");
    busybox_image(IMAGE, &image);
    let import = ctd.ctr(&["image", "import", image.to_str().unwrap()]);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    let sockets_before = shim_sockets();
    let started = std::time::Instant::now();
    let run = ctd.ctr_within(
        &[
            "run",
            "--runtime",
            "io.containerd.vessel.v2",
            "--rm",
            IMAGE,
            "c1",
            "/bin/sh",
            "-c",
            "echo hi; uname -r; exit 3",
        ],
        RUN_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("ctr run took {:?}", started.elapsed());
    assert_eq!(
        run.status.code(),
        Some(3),
        "stdout: {stdout}\nstderr: {stderr}\ncontainerd:\n{}",
        ctd.log()
    );
    assert_eq!(
        stdout,
        format!("hi\n{}", kernel_version),
        "the guest kernel's release"
    );
    assert_nothing_left_of(&ctd, "c1");
    let left: Vec<_> = shim_sockets()
        .difference(&sockets_before)
        .cloned()
        .collect();
    assert!(
        left.is_empty(),
        "shim sockets left in {SHIM_SOCKETS}: {left:?}"
    );
}

/// Where containerd-shim puts every shim's ttrpc socket, whichever containerd started it.
const SHIM_SOCKETS: &str = "/run/containerd/s";

fn shim_sockets() -> std::collections::BTreeSet<std::ffi::OsString> {
    let entries = std::fs::read_dir(SHIM_SOCKETS)
        .into_iter()
        .flatten()
        .flatten();
    entries.map(|e| e.file_name()).collect()
}

/// `ctr task kill` sends SIGTERM (its default) through the shim and the agent to the
/// container's process, whose trap reports it and sets the exit status. A second nested
/// boot, so not part of every run: `cargo test --test containerd -- --ignored`.
#[test]
#[ignore = "a second boot of the Debian kernel (minutes on kvm_pvm); run with --ignored"]
fn ctr_task_kill_delivers_sigterm_to_the_containers_process() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let (kernel, _) = debian_guest();
    let ctd = Containerd::start(kernel.parent().unwrap());
    let image = ctd.dir.path().join("image.tar");
    busybox_image(IMAGE, &image);
    let import = ctd.ctr(&["image", "import", image.to_str().unwrap()]);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let script = "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 1; done";
    let mut run = ctd.ctr_spawn(&[
        "run",
        "--runtime",
        "io.containerd.vessel.v2",
        "--rm",
        IMAGE,
        "c2",
        "/bin/sh",
        "-c",
        script,
    ]);
    let mut stdout = std::io::BufReader::new(run.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n", "containerd:\n{}", ctd.log());
    let kill = ctd.ctr(&["task", "kill", "c2"]);
    assert!(
        kill.status.success(),
        "{}",
        String::from_utf8_lossy(&kill.stderr)
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = run.wait().unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(7));
    assert_nothing_left_of(&ctd, "c2");
}

/// No VMM or shim process, socket, initramfs or mount of the container is left.
fn assert_nothing_left_of(ctd: &Containerd, id: &str) {
    let dir = ctd.dir.path().display().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut left = processes_mentioning(&format!("{dir}/s/"));
    left.extend(
        processes_mentioning("containerd-shim-vessel-v2")
            .into_iter()
            .filter(|p| p.contains(&dir)),
    );
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = processes_mentioning(&format!("{dir}/s/"));
        left.extend(
            processes_mentioning("containerd-shim-vessel-v2")
                .into_iter()
                .filter(|p| p.contains(&dir)),
        );
    }
    assert!(left.is_empty(), "processes left: {left:#?}");
    let bundle = ctd
        .state()
        .join("io.containerd.runtime.v2.task/default")
        .join(id);
    assert!(!bundle.exists(), "the bundle {bundle:?} is left");
    let mounts = mounts_under(Path::new(&dir));
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let socket_dir = ctd.state();
    let sockets: Vec<_> = walk(&socket_dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("vsock"))
        .collect();
    assert!(sockets.is_empty(), "vsock sockets left: {sockets:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
