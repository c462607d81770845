//! A private containerd for the runtime tests: its own root, state and sockets under a
//! temporary directory, vessel's runtime installed there by
//! scripts/install-containerd-runtime.sh (also the CRI's `vessel` runtime handler), and OCI
//! images built from busybox-static: an application image and the CRI's sandbox image.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Why this host cannot run the test, if it cannot.
pub fn skip_reason() -> Option<String> {
    let missing = ["containerd", "ctr"]
        .into_iter()
        .find(|tool| Command::new(tool).arg("--version").output().is_err());
    if let Some(tool) = missing {
        return Some(format!(
            "{tool} is not installed (apt-get install containerd)"
        ));
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox is missing (apt-get install busybox-static)".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("containerd needs root".into());
    }
    None
}

/// A private containerd whose runtime boots the Debian guest (scripts/make-guest.sh), and
/// the guest kernel's release; `None`, saying why, where containerd cannot run here.
pub fn containerd_with_the_debian_guest() -> Option<(Containerd, String)> {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return None;
    }
    let (kernel, _) = crate::common::nested::debian_guest();
    let guest_dir = kernel.parent().unwrap().to_path_buf();
    let kernel_version = std::fs::read_to_string(guest_dir.join("kernel.version")).unwrap();
    Some((Containerd::start(&guest_dir), kernel_version))
}

/// The containerd namespace of the CRI plugin's images, sandboxes and containers.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// The CRI's sandbox image ([`pause_image`]): containerd pulls none, it is imported.
pub const PAUSE_IMAGE: &str = "docker.io/library/vessel-pause:latest";

/// containerd's configuration in directory `d`: its root, state and sockets there; the CRI
/// plugin without its TCP service, with [`PAUSE_IMAGE`] for sandboxes, no OOM score below
/// containerd's own (the sandbox's -998 needs CAP_SYS_RESOURCE, which the test machines'
/// root lacks), pods' network namespaces under its state directory rather than /run/netns,
/// CNI configurations only from `d/cni` (none unless a test writes one:
/// [`Containerd::use_cni_bridge`]) with Debian's plugins, and
/// vessel's runtime as the `vessel` runtime handler beside the default `runc` (a runtimes
/// table replaces containerd's built-in one, so runc's is named again).
///
/// containerd gives a shim's State and Stats 2 s by default
/// (`io.containerd.timeout.task.state`) and drops a task's metrics that take longer; a guest
/// whose ring 0 is emulated answered Stats later than that in one CI run, so the tests allow
/// 60 s (a slow host's setting, as docs/kubernetes.md says).
fn config(d: &Path) -> String {
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/s"
[grpc]
address = "{d}/ctd.sock"
[ttrpc]
address = "{d}/ctd.ttrpc"
[timeouts]
"io.containerd.timeout.task.state" = "60s"
[plugins."io.containerd.grpc.v1.cri"]
disable_tcp_service = true
sandbox_image = "{PAUSE_IMAGE}"
restrict_oom_score_adj = true
netns_mounts_under_state_dir = true
[plugins."io.containerd.grpc.v1.cri".cni]
conf_dir = "{d}/cni"
bin_dir = "/usr/lib/cni"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vessel]
runtime_type = "io.containerd.vessel.v2"
"#,
        d = d.display()
    )
}

/// A new temporary directory for a private containerd. It is in /tmp: vessel's vsock
/// socket path in the bundle must stay short.
fn private_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ctd")
        .tempdir_in("/tmp")
        .unwrap()
}

/// Installs vessel's runtime in `d`/p (scripts/install-containerd-runtime.sh), its
/// configuration in `d`/shim.toml, the guest built in `guest_dir`.
fn install_runtime(d: &Path, guest_dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let install = Command::new(root.join("scripts/install-containerd-runtime.sh"))
        .env("PREFIX", d.join("p"))
        .env("CONFIG", d.join("shim.toml"))
        .env("PROFILE", "debug")
        .env("VESSEL", env!("CARGO_BIN_EXE_vessel"))
        .env("GUEST_DIR", guest_dir)
        .env("CARGO_TARGET_DIR", root.join("target/containerd-runtime"))
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/install-containerd-runtime.sh");
    assert!(
        install.status.success(),
        "install-containerd-runtime.sh failed:\n{}",
        String::from_utf8_lossy(&install.stderr)
    );
}

/// The bridge of [`Containerd::use_cni_bridge`]'s network.
pub const CNI_BRIDGE: &str = "vslcni0";
/// The host's address on it (the pods' gateway).
pub const CNI_GATEWAY: &str = "10.244.77.1";
/// The pods' network.
pub const CNI_SUBNET: &str = "10.244.77.0/24";

/// A running private containerd; killed and its directory removed on drop.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    /// Installs the runtime under a new temporary directory and starts containerd there.
    pub fn start(guest_dir: &Path) -> Containerd {
        let dir = private_dir();
        install_runtime(dir.path(), guest_dir);
        Containerd::start_in(dir)
    }

    /// containerd without vessel's runtime: only runc's, the CRI's default runtime handler.
    pub fn start_runc_only() -> Containerd {
        Containerd::start_in(private_dir())
    }

    /// Starts containerd with its configuration, state and log in `dir`, vessel's runtime
    /// from `dir`/p/bin on its PATH; returns once it answers.
    fn start_in(dir: tempfile::TempDir) -> Containerd {
        let d = dir.path();
        std::fs::write(d.join("config.toml"), config(d)).unwrap();
        let path = format!(
            "{}:{}",
            d.join("p/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", path)
            .env("VESSEL_SHIM_CONFIG", d.join("shim.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let ctd = Containerd { dir, child };
        let start = Instant::now();
        while !ctd.ctr(&["version"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "containerd did not come up:\n{}",
                ctd.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        ctd
    }

    /// The ttrpc socket containerd-shim names for the shim of task group `group` (a task's
    /// id, or a pod's sandbox id) in `namespace`: `/run/containerd/s/` and the SHA-256 of
    /// containerd's address, the namespace and the group (containerd-shim's
    /// `socket_address`).
    pub fn shim_socket_of(&self, namespace: &str, group: &str) -> PathBuf {
        let name = format!("{}/{namespace}/{group}", self.socket().display());
        PathBuf::from(format!("/run/containerd/s/{:x}", Sha256::digest(name)))
    }

    /// The bundle of task `id` in `namespace`.
    pub fn bundle_of(&self, namespace: &str, id: &str) -> PathBuf {
        self.state()
            .join("io.containerd.runtime.v2.task")
            .join(namespace)
            .join(id)
    }

    /// Gives pods with a network of their own the CNI bridge plugin's network: bridge
    /// [`CNI_BRIDGE`] with the host at [`CNI_GATEWAY`] and the pods in [`CNI_SUBNET`]; the bridge
    /// is removed on drop.
    pub fn use_cni_bridge(&self) {
        let d = self.dir.path();
        std::fs::create_dir_all(d.join("cni")).unwrap();
        let conf = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "vessel-test",
            "plugins": [{
                "type": "bridge",
                "bridge": CNI_BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": CNI_SUBNET, "gateway": CNI_GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": d.join("cni-ipam"),
                },
            }],
        });
        std::fs::write(d.join("cni/10-vessel-test.conflist"), conf.to_string()).unwrap();
    }

    /// The socket of containerd's gRPC services, the CRI's among them.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("ctd.sock")
    }

    /// Imports the image archive at `archive` into containerd namespace `namespace`.
    pub fn import(&self, namespace: &str, archive: &Path) {
        let path = archive.to_str().unwrap();
        let out = self.ctr_within(
            &["-n", namespace, "image", "import", path],
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "ctr image import {path} into {namespace}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Builds [`PAUSE_IMAGE`] and `app_image` (busybox, [`busybox_image`]) and imports them
    /// into the CRI's namespace, where RunPodSandbox and CreateContainer look for them.
    pub fn import_cri_images(&self, app_image: &str) {
        let pause = self.dir.path().join("pause.tar");
        pause_image(PAUSE_IMAGE, &pause);
        self.import(CRI_NAMESPACE, &pause);
        let app = self.dir.path().join("app.tar");
        busybox_image(app_image, &app);
        self.import(CRI_NAMESPACE, &app);
    }

    /// `ctr` against this containerd.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.path().join("ctd.sock"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// `ctr` with a deadline; fails the test with containerd's log when it hangs.
    pub fn ctr_within(&self, args: &[&str], timeout: Duration) -> Output {
        self.ctr_input(args, b"", timeout)
    }

    /// `ctr` with `input` on its stdin (then closed), within `timeout`.
    pub fn ctr_input(&self, args: &[&str], input: &[u8], timeout: Duration) -> Output {
        let mut child = Command::new("ctr")
            .arg("--address")
            .arg(self.dir.path().join("ctd.sock"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ctr");
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, input).unwrap();
        drop(stdin);
        self.finish_within(child, args, timeout)
    }

    /// `ctr` on a terminal of `rows` x `cols` (util-linux `script` gives it one: ctr's `-t`
    /// needs its stdin to be a terminal), within `timeout`; the terminal's output.
    pub fn ctr_on_terminal(&self, args: &[&str], size: (u16, u16), timeout: Duration) -> Output {
        let quote = |a: &str| format!("'{}'", a.replace('\'', "'\\''"));
        let address = self.dir.path().join("ctd.sock");
        let mut command = format!(
            "stty rows {} cols {}; exec ctr --address {}",
            size.0,
            size.1,
            quote(&address.display().to_string())
        );
        for a in args {
            command.push(' ');
            command.push_str(&quote(a));
        }
        // script's stdin stays open and silent until ctr ends: at its end script would type
        // an end-of-file into the terminal, which the guest's terminal echoes as `^@`.
        let mut child = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script");
        let _silent_input = child.stdin.take();
        self.finish_within(child, args, timeout)
    }

    /// Waits for `child` (ctr `args`) to end within `timeout`; fails the test with
    /// containerd's log when it hangs.
    fn finish_within(&self, mut child: Child, args: &[&str], timeout: Duration) -> Output {
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > timeout {
                let _ = child.kill();
                panic!(
                    "ctr {args:?} hung for {timeout:?}; containerd's log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.wait_with_output().unwrap()
    }

    /// `ctr` in the background with its stdout piped (no deadline: the caller reads it).
    pub fn ctr_spawn(&self, args: &[&str]) -> Child {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.path().join("ctd.sock"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run ctr")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// containerd's state directory (bundles, under io.containerd.runtime.v2.task).
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("s")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What a failed test left running: shims (their -address names this directory)
        // and their VMMs and containers' processes.
        for p in processes_mentioning(&self.dir.path().display().to_string()) {
            if let Some(pid) = p.split(':').next().and_then(|pid| pid.parse::<i32>().ok()) {
                // SAFETY: kill(2) takes plain integers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // containerd's own mounts (none are left by a clean run), so the removal works.
        for m in mounts_under(self.dir.path()) {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        if self.dir.path().join("cni/10-vessel-test.conflist").exists() {
            let _ = Command::new("ip")
                .args(["link", "del", CNI_BRIDGE])
                .status();
        }
    }
}

/// The vsock sockets and the share of host directories (with its working and staging
/// places) vessel's
/// shim keeps for the VM of `bundle`: named after the FNV-1a hash of the bundle's path in
/// /run/vessel-shim, as crates/shim/src/vm.rs names them.
pub fn vm_sockets_of(bundle: &Path) -> [PathBuf; 5] {
    let hash = bundle
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let uds = format!("/run/vessel-shim/{hash:016x}.vsock");
    let volumes = format!("/run/vessel-shim/{hash:016x}.volumes");
    [
        PathBuf::from(&uds),
        PathBuf::from(format!("{uds}_1024")),
        PathBuf::from(format!("{volumes}.staging")),
        PathBuf::from(format!("{volumes}.d")),
        PathBuf::from(volumes),
    ]
}

/// Mount points under `dir`, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

fn tar_entry(
    t: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
    link: Option<&str>,
) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    if let Some(link) = link {
        h.set_link_name(link).unwrap();
    }
    t.append_data(&mut h, path, data).unwrap();
}

/// An OCI image archive (`ctr image import` reads it) named `name`: one layer with
/// busybox-static at /bin/busybox and links for a few applets; its command is /bin/sh.
pub fn busybox_image(name: &str, out: &Path) {
    oci_image(
        name,
        serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]}),
        out,
    );
}

/// The CRI's sandbox image: [`busybox_image`]'s layer, its entrypoint a sleep that lasts
/// until the process is killed (68 years), as Kubernetes' pause process does.
pub fn pause_image(name: &str, out: &Path) {
    let config = serde_json::json!({
        "Env": ["PATH=/bin"],
        "Entrypoint": ["/bin/sleep", "2147483647"],
    });
    oci_image(name, config, out);
}

/// An OCI image archive named `name` of busybox's layer, with the image configuration's
/// `config` (entrypoint, command, environment).
fn oci_image(name: &str, image_config: serde_json::Value, out: &Path) {
    let mut layer = tar::Builder::new(Vec::new());
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "run"] {
        tar_entry(&mut layer, d, tar::EntryType::Directory, 0o755, b"", None);
    }
    let busybox = std::fs::read("/bin/busybox").unwrap();
    tar_entry(
        &mut layer,
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        &busybox,
        None,
    );
    for applet in ["sh", "echo", "uname", "cat", "ls", "sleep", "trap"] {
        let path = format!("bin/{applet}");
        tar_entry(
            &mut layer,
            &path,
            tar::EntryType::Symlink,
            0o777,
            b"",
            Some("busybox"),
        );
    }
    let layer = layer.into_inner().unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
    })
    .to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(&layer), "size": layer.len()}],
    })
    .to_string();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": digest(manifest.as_bytes()), "size": manifest.len(),
                       "annotations": {"io.containerd.image.name": name,
                                       "org.opencontainers.image.ref.name": "latest"}}],
    })
    .to_string();
    let mut archive = tar::Builder::new(Vec::new());
    let files: [(String, &[u8]); 5] = [
        ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json".into(), index.as_bytes()),
        (blob_path(&layer), &layer),
        (blob_path(config.as_bytes()), config.as_bytes()),
        (blob_path(manifest.as_bytes()), manifest.as_bytes()),
    ];
    for (path, data) in files {
        tar_entry(
            &mut archive,
            &path,
            tar::EntryType::Regular,
            0o644,
            data,
            None,
        );
    }
    std::fs::File::create(out)
        .unwrap()
        .write_all(&archive.into_inner().unwrap())
        .unwrap();
}

fn blob_path(data: &[u8]) -> String {
    format!("blobs/sha256/{:x}", Sha256::digest(data))
}
