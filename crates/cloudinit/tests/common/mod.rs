//! Helpers shared by the integration tests: finding host tools (skip when one is missing,
//! unless VESSEL_REQUIRE_TCG is set, then fail), writing seed images, reading files back
//! out of them with mtools.

#![allow(dead_code)]

use cloudinit::{render, write_seed_image, SeedConfig, SeedFiles, SeedNic};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A real ed25519 public key line (made by ssh-keygen once; the private half is gone).
pub const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIARPIXvReraPrJ9whime60Kf5JupqnkOseJ0WNCiQEUt me@x";

/// True when `tool` is on PATH (or in /sbin, /usr/sbin). When it is not: fails the test if
/// VESSEL_REQUIRE_TCG is set, otherwise prints why the test is skipped.
pub fn have(tool: &str, package: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .any(|dir| Path::new(dir).join(tool).is_file());
    require(found, &format!("{tool} (apt-get install {package})"))
}

/// True when Debian's cloud-init is importable by /usr/bin/python3 (same rules as [`have`]).
pub fn have_cloud_init() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import cloudinit.sources.DataSourceNoCloud"])
        .output()
        .is_ok_and(|o| o.status.success());
    require(
        ok,
        "cloud-init for /usr/bin/python3 (apt-get install cloud-init)",
    )
}

/// True when /usr/bin/python3 can import PyYAML (same rules as [`have`]).
pub fn have_python_yaml() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    require(
        ok,
        "PyYAML for /usr/bin/python3 (apt-get install python3-yaml)",
    )
}

/// Skip-or-fail policy for a missing prerequisite.
fn require(found: bool, what: &str) -> bool {
    if !found {
        assert!(
            std::env::var_os("VESSEL_REQUIRE_TCG").is_none(),
            "VESSEL_REQUIRE_TCG is set but {what} is missing"
        );
        eprintln!("skipped: {what} is missing");
    }
    found
}

/// Runs a command, failing the test if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run {cmd:?}: {e}"),
    }
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A typical config: one key, two NICs, optional extra user-data.
pub fn config(extra: Option<&str>) -> SeedConfig {
    SeedConfig {
        instance_id: "vessel-test-1".into(),
        hostname: "yes".into(),
        ssh_authorized_keys: vec![KEY.into()],
        extra_user_data: extra.map(str::to_string),
        nics: vec![
            SeedNic {
                mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            },
            SeedNic {
                mac: [0x52, 0x54, 0, 0, 0, 0xab],
            },
        ],
        default_user: None,
        mounts: Vec::new(),
    }
}

/// Renders `config` and writes its seed image into `dir`.
pub fn seed(dir: &Path, config: &SeedConfig) -> (SeedFiles, PathBuf) {
    let files = render(config).unwrap_or_else(|e| panic!("render: {e}"));
    let image = dir.join("seed.img");
    write_seed_image(&files, &image).unwrap_or_else(|e| panic!("write_seed_image: {e}"));
    (files, image)
}

/// Copies the three files out of `image` into `dir` with mcopy.
pub fn extract(image: &Path, dir: &Path) {
    for name in ["meta-data", "user-data", "network-config"] {
        let from = format!("::{name}");
        run_ok(
            Command::new("mcopy")
                .arg("-n")
                .arg("-i")
                .arg(image)
                .arg(from)
                .arg(dir.join(name)),
        );
    }
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}
