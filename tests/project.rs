//! The project workflow end to end on KVM: `vessel up` creates a VM from ./vessel.toml and
//! starts it (and is idempotent), `vessel reload` applies a changed file and restarts the
//! VM (refusing a change it cannot apply before stopping anything), and
//! `vessel global-status` lists VMs across state directories.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{multiboot_guest, out_dir};

fn service_guest() -> PathBuf {
    multiboot_guest(
        "service",
        &["multiboot_header.S", "service_guest.c"],
        "multiboot.ld",
    )
}

/// A project directory with its own state dir and data dir (the global-status index).
struct Project {
    dir: PathBuf,
    state: common::state_dir::TestState,
}

impl Project {
    fn new(name: &str) -> Self {
        let dir = out_dir().join(format!("project-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        Project {
            dir,
            state: common::state_dir::TestState::new(&format!("project-{name}")),
        }
    }

    fn write(&self, name: &str, memory: &str, extra: &str) {
        std::fs::write(
            self.dir.join("vessel.toml"),
            format!(
                "name = \"{name}\"\ncpus = 1\nmemory = \"{memory}\"\n{extra}\n[boot]\nkernel = {:?}\ncmdline = \"service\"\n",
                service_guest()
            ),
        )
        .unwrap();
    }

    /// `vessel --state-dir S ARGS` run in the project directory; (status, stdout, stderr).
    fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_vessel"))
            .arg("--state-dir")
            .arg(&self.state.0)
            .args(args)
            .current_dir(&self.dir)
            .env("XDG_DATA_HOME", self.dir.join("data"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, Some(0), "{args:?}\nstdout: {out}\nstderr: {err}");
        out
    }

    fn summary(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["inspect", name, "--json"])).unwrap()
    }
}

fn global_status(data: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(["global-status", "--json"])
        .env("XDG_DATA_HOME", data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn up_creates_and_starts_once_then_reload_applies_the_changed_file() {
    let p = Project::new("web");
    p.write("web", "32M", "");
    let out = p.ok(&["up"]);
    assert!(out.contains("created VM 'web'"), "{out}");
    assert!(out.contains("started VM 'web'"), "{out}");
    assert_eq!(p.summary("web")["state"], "running");
    // Again: nothing is created or started twice.
    let out = p.ok(&["up"]);
    assert!(out.contains("already running"), "{out}");
    assert!(!out.contains("created"), "{out}");

    let rows = global_status(&p.dir.join("data"));
    let row = rows
        .iter()
        .find(|r| r["name"] == "web")
        .expect("web listed");
    assert_eq!(row["state"], "running");
    let project = std::fs::canonicalize(p.dir.join("vessel.toml")).unwrap();
    assert_eq!(row["project"], project.display().to_string());
    let state_dir = std::fs::canonicalize(&p.state.0).unwrap();
    assert_eq!(row["state_dir"], state_dir.display().to_string());

    // A change reload cannot apply is refused before the VM is stopped.
    let disk = p.dir.join("extra.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    p.write(
        "web",
        "48M",
        &format!("[[disk]]\npath = {:?}\nformat = \"raw\"\n", disk),
    );
    let (code, _, err) = p.run(&["reload", "web"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("changes the disks"), "{err}");
    assert_eq!(p.summary("web")["state"], "running");

    p.write("web", "48M", "");
    let out = p.ok(&["reload", "web", "--stop-timeout", "20"]);
    assert!(out.contains("restarted VM 'web'"), "{out}");
    let v = p.summary("web");
    assert_eq!(v["state"], "running");
    assert_eq!(v["memory_mib"], 48);
    p.ok(&["stop", "web", "--force"]);
}

#[test]
fn up_without_a_project_file_or_name_says_what_to_give() {
    let p = Project::new("none");
    let (code, _, err) = p.run(&["up"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no ./vessel.toml here"), "{err}");
    let (code, _, err) = p.run(&["up", "ghost"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    // A broken project file is reported with its line; nothing is created.
    std::fs::write(p.dir.join("vessel.toml"), "name = \"bad\"\ncpus = 0\n").unwrap();
    let (code, _, err) = p.run(&["up"]);
    assert_ne!(code, Some(0), "{err}");
    assert!(!p.state.0.join("bad").exists());
}

#[test]
fn global_status_prune_forgets_state_dirs_that_are_gone() {
    let p = Project::new("prune");
    p.write("gone", "32M", "");
    p.ok(&["create", "gone", "--from", "vessel.toml"]);
    let data = p.dir.join("data");
    assert!(global_status(&data).iter().any(|r| r["name"] == "gone"));
    p.ok(&["rm", "gone"]);
    let out = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(["global-status", "--prune"])
        .env("XDG_DATA_HOME", &data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let index = std::fs::read_to_string(data.join("vessel/state-dirs")).unwrap();
    assert!(index.trim().is_empty(), "{index}");
}

#[test]
fn validate_refuses_provisioners_whose_files_are_missing() {
    let p = Project::new("prov");
    p.write(
        "prov",
        "32M",
        "groups = [\"web\"]\n[[provision]]\nscript = \"missing.sh\"\n[[provision]]\nfile = { source = \"site\", destination = \"srv\" }\n",
    );
    let (code, _, err) = p.run(&["validate", "vessel.toml"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("destination 'srv' must be an absolute guest path"),
        "{err}"
    );
    std::fs::create_dir_all(p.dir.join("site")).unwrap();
    p.write(
        "prov",
        "32M",
        "[[provision]]\nscript = \"missing.sh\"\n[[provision]]\nfile = { source = \"site\", destination = \"/srv\" }\n",
    );
    let (code, _, err) = p.run(&["validate", "vessel.toml"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(":6:") || err.contains("missing.sh"), "{err}");
    assert!(err.contains("provision script"), "{err}");
    // A VM without provisioners starts without waiting for SSH; one whose provisioners
    // ran is not provisioned again (covered with a real guest in tests/image_ssh.rs).
    let (code, _, err) = p.run(&["create", "prov", "--from", "vessel.toml"]);
    assert_eq!(code, Some(2), "{err}");
}
