//! Vagrant drives vessel through the vagrant-vessel provider plugin: `vagrant box add` of a
//! vessel box, `vagrant up --provider=vessel` (the box's image is imported into vessel's
//! store, the VM created with the Vagrantfile's CPUs, memory and forwarded ports, and
//! started), `vagrant status`, `vagrant halt`, `up` again, `vagrant destroy -f`. The box's
//! kernel is the small service guest, which runs until it is asked to power off but has no
//! sshd, so Vagrant's wait for ssh times out (that is asserted); ssh, provisioners and
//! ssh-config through Vagrant run in tests/image_ssh.rs against a Debian image with sshd.

mod common;

use std::path::PathBuf;

use common::vagrant::{add_box, Project};
use common::{multiboot_guest, out_dir};

fn service_guest() -> PathBuf {
    multiboot_guest(
        "service",
        &["multiboot_header.S", "service_guest.c"],
        "multiboot.ld",
    )
}

fn vms(p: &Project) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--state-dir")
        .arg(&p.state)
        .args(["ls", "--json"])
        .env("XDG_DATA_HOME", &p.data)
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn vagrant_up_halt_destroy_run_vessel_vms() {
    common::tcg::require_tool("vagrant", "vagrant");
    let home = out_dir().join("vagrant");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let state = common::state_dir::TestState::new("vagrant");
    let port = common::tcg::free_port();
    let p = Project::new(
        &home,
        &state.0,
        &home.join("data"),
        &format!(
            "  config.vm.box = \"tiny\"\n  config.vm.boot_timeout = 10\n  config.vm.synced_folder \".\", \"/vagrant\", disabled: true\n  config.vm.network \"forwarded_port\", guest: 80, host: {port}\n  config.vm.provider :vessel do |v|\n    v.cpus = 2\n    v.memory = \"64M\"\n    v.state_dir = \"STATE\"\n  end\n"
        ),
    );
    add_box(&p, "tiny", &service_guest(), "service");
    assert!(p.ok(&["status"]).contains("not created (vessel)"));

    // up: created and started by vessel; the service guest has no sshd, so the wait for
    // ssh ends with Vagrant's boot timeout.
    let up = p.vagrant(&["up", "--provider=vessel"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(!up.status.success(), "{text}");
    assert!(
        text.contains("importing the box into vessel's image store"),
        "{text}"
    );
    assert!(
        text.contains("Timed out while waiting for the machine to boot"),
        "{text}"
    );
    let list = vms(&p);
    assert_eq!(list.len(), 1, "{list:?}");
    let vm = &list[0];
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["cpus"], 2);
    assert_eq!(vm["memory_mib"], 64);
    let ports = vm["ports"].as_array().unwrap();
    assert!(
        ports
            .iter()
            .any(|f| f["host_port"] == port && f["guest_port"] == 80),
        "{ports:?}"
    );
    assert!(p.ok(&["status"]).contains("running (vessel)"));

    p.ok(&["halt"]);
    assert_eq!(vms(&p)[0]["state"], "stopped");
    assert!(p.ok(&["status"]).contains("poweroff (vessel)"));

    // up again starts the same VM (no second import or create).
    let again = p.vagrant(&["up", "--provider=vessel"]);
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(!text.contains("creating vessel VM"), "{text}");
    assert!(text.contains("starting vessel VM"), "{text}");
    assert_eq!(vms(&p)[0]["state"], "running");

    p.ok(&["destroy", "-f"]);
    assert!(vms(&p).is_empty());
    assert!(p.ok(&["status"]).contains("not created (vessel)"));
}

#[test]
fn vagrant_refuses_bad_provider_settings() {
    common::tcg::require_tool("vagrant", "vagrant");
    let home = out_dir().join("vagrant-bad");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let p = Project::new(
        &home,
        &home.join("state"),
        &home.join("data"),
        "  config.vm.box = \"none\"\n  config.vm.provider :vessel do |v|\n    v.cpus = 0\n    v.memory = \"lots\"\n  end\n",
    );
    let out = p.vagrant(&["up", "--provider=vessel"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(
        text.contains("cpus must be a whole number from 1"),
        "{text}"
    );
    assert!(text.contains("memory needs a unit"), "{text}");
}
