//! A private containerd for the runtime tests: its own root, state and sockets under a
//! temporary directory, vessel's runtime installed there by
//! scripts/install-containerd-runtime.sh, and an OCI image built from busybox-static.

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

/// A running private containerd; killed and its directory removed on drop.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    /// Installs the runtime under a new temporary directory and starts containerd there.
    /// The directory is in /tmp: vessel's vsock socket path in the bundle must stay short.
    pub fn start(guest_dir: &Path) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("ctd")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
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
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/s\"\n\
             [grpc]\naddress = \"{d}/ctd.sock\"\n[ttrpc]\naddress = \"{d}/ctd.ttrpc\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\ndisable_tcp_service = true\n",
            d = d.display()
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
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
        let mut child = Command::new("ctr")
            .arg("--address")
            .arg(self.dir.path().join("ctd.sock"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ctr");
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
        // containerd's own mounts (none are left by a clean run), so the removal works.
        for m in mounts_under(self.dir.path()) {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
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
/// busybox-static at /bin/busybox and links for a few applets.
pub fn busybox_image(name: &str, out: &Path) {
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
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
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
