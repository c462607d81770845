//! Vagrant (Debian's 2.3) with the vagrant-vessel plugin loaded from this repository by
//! `require_relative` in the Vagrantfile: no network, no `vagrant plugin install`. Each
//! project has its own VAGRANT_HOME, vessel state dir and data dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::boot_image;

pub struct Project {
    pub dir: PathBuf,
    /// vessel's `--state-dir` for the machines (the provider's `state_dir`).
    pub state: PathBuf,
    /// XDG_DATA_HOME: vessel's image store and ssh key.
    pub data: PathBuf,
}

impl Project {
    /// A project under `home` whose Vagrantfile holds `body` inside `Vagrant.configure`.
    /// `STATE` in `body` is replaced by the state dir.
    pub fn new(home: &Path, state: &Path, data: &Path, body: &str) -> Self {
        let dir = home.join("project");
        std::fs::create_dir_all(&dir).unwrap();
        let plugin =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("vagrant-vessel/lib/vagrant-vessel");
        let body = body.replace("STATE", &state.display().to_string());
        std::fs::write(
            dir.join("Vagrantfile"),
            format!(
                "require_relative {:?}\n\nVagrant.configure(\"2\") do |config|\n{body}\nend\n",
                plugin.display().to_string()
            ),
        )
        .unwrap();
        Project {
            dir,
            state: state.to_path_buf(),
            data: data.to_path_buf(),
        }
    }

    /// `vagrant ARGS` in the project.
    pub fn vagrant(&self, args: &[&str]) -> Output {
        Command::new("vagrant")
            .args(args)
            .current_dir(&self.dir)
            .env("VAGRANT_HOME", self.dir.parent().unwrap().join("vagrant.d"))
            .env("VAGRANT_CHECKPOINT_DISABLE", "1")
            .env("VAGRANT_NO_COLOR", "1")
            .env("VESSEL", env!("CARGO_BIN_EXE_vessel"))
            .env("XDG_DATA_HOME", &self.data)
            .output()
            .unwrap()
    }

    /// `vagrant ARGS` that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.vagrant(args);
        assert!(
            out.status.success(),
            "vagrant {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A vessel box holding a small bootable image whose kernel is `kernel` booted with
/// `words`, written by `vessel image box` and added to Vagrant as `name`. The image it was
/// made from is removed again, so Vagrant's first `up` imports the box's own copy.
pub fn add_box(p: &Project, name: &str, kernel: &Path, words: &str) {
    let image = boot_image::make(&format!("box-{name}"), kernel, words, "qcow2");
    let file = image.parent().unwrap().join(format!("{name}.box"));
    let _ = std::fs::remove_file(&file);
    let source = format!("box-source-{name}");
    let vessel = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vessel"))
            .args(args)
            .env("XDG_DATA_HOME", &p.data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "vessel {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    vessel(&[
        "image",
        "import",
        image.to_str().unwrap(),
        "--name",
        &source,
    ]);
    vessel(&["image", "box", &source, file.to_str().unwrap()]);
    vessel(&["image", "rm", &source]);
    p.ok(&[
        "box",
        "add",
        "--force",
        "--name",
        name,
        file.to_str().unwrap(),
    ]);
}
