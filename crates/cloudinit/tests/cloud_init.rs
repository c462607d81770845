//! The seed as cloud-init itself reads it: Debian's cloud-init package (22.4 on Debian 12)
//! loads the files with its NoCloud datasource code, derives interfaces from
//! `network-config`, splits `user-data` into parts, merges the cloud-config parts with its
//! own part handler, and validates the result against its schema (`nocloud_check.py`).

mod common;

use common::{
    config, extract, have, have_cloud_init, have_python_yaml, run_ok, seed, tempdir, KEY,
};
use serde_json::{json, Value};
use std::process::Command;

/// What nocloud_check.py reports for the seed of `config`.
fn cloud_init_view(config: &cloudinit::SeedConfig) -> Option<Value> {
    if !have_cloud_init() || !have("mcopy", "mtools") {
        return None;
    }
    let dir = tempdir();
    let (_, image) = seed(dir.path(), config);
    let files = tempdir();
    extract(&image, files.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nocloud_check.py");
    let mut seed_dir = files.path().as_os_str().to_owned();
    seed_dir.push("/");
    let out = run_ok(Command::new("/usr/bin/python3").arg(script).arg(seed_dir));
    match serde_json::from_str(&out) {
        Ok(v) => Some(v),
        Err(e) => panic!("nocloud_check.py printed {out:?}: {e}"),
    }
}

/// The types of the user-data parts cloud-init found.
fn part_types(view: &Value) -> Vec<&str> {
    let parts = view["parts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    parts.iter().filter_map(|p| p["type"].as_str()).collect()
}

#[test]
fn vessel_seed_alone() {
    let mut c = config(None);
    c.default_user = Some("vessel".into());
    let Some(view) = cloud_init_view(&c) else {
        return;
    };
    // "yes" stays a string (PyYAML would read a plain yes as true).
    assert_eq!(
        view["meta_data"],
        json!({"instance-id": "vessel-test-1", "local-hostname": "yes"})
    );
    let macs: Vec<&str> = view["interfaces"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["mac"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(macs, ["52:54:00:12:34:56", "52:54:00:00:00:ab"]);
    assert_eq!(view["interfaces"][0]["subnets"][0]["type"], "dhcp4");
    assert_eq!(part_types(&view), ["text/cloud-config"]);
    assert_eq!(
        view["cloud_config"],
        json!({
            "users": ["default"],
            "ssh_authorized_keys": [KEY],
            "ssh_pwauth": false,
            "system_info": {"default_user": {"name": "vessel"}},
        })
    );
    assert_eq!(view["schema"], "ok");
}

#[test]
fn users_cloud_config_is_deep_merged() {
    let extra = "#cloud-config\n\
        packages: [htop]\n\
        runcmd:\n  - [sh, -c, 'echo hi > /run/x']\n\
        ssh_authorized_keys:\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJC user\n\
        ssh_pwauth: true\n\
        write_files:\n  - path: /etc/x\n    permissions: '0644'\n    content: 'yes'\n";
    let Some(view) = cloud_init_view(&config(Some(extra))) else {
        return;
    };
    assert_eq!(
        part_types(&view),
        ["text/cloud-config", "text/cloud-config"]
    );
    let cc = &view["cloud_config"];
    assert_eq!(cc["packages"], json!(["htop"]));
    assert_eq!(cc["runcmd"], json!([["sh", "-c", "echo hi > /run/x"]]));
    assert_eq!(cc["users"], json!(["default"]));
    let keys = cc["ssh_authorized_keys"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(keys.len(), 2, "{cc}");
    assert_eq!(keys[1], KEY);
    // The user's own settings win; their YAML keeps its meaning ('yes' is a string).
    assert_eq!(cc["ssh_pwauth"], true);
    assert_eq!(
        cc["write_files"],
        json!([{"path": "/etc/x", "permissions": "0644", "content": "yes"}])
    );
    assert_eq!(view["schema"], "ok");
}

#[test]
fn users_script_is_a_part_of_its_own() {
    let script = "#!/bin/sh\necho 'héllo ✓' > /run/hello\n";
    let Some(view) = cloud_init_view(&config(Some(script))) else {
        return;
    };
    assert_eq!(
        part_types(&view),
        ["text/x-shellscript", "text/cloud-config"]
    );
    assert_eq!(view["parts"][0]["payload"], script);
    assert_eq!(view["cloud_config"]["ssh_authorized_keys"], json!([KEY]));
    assert_eq!(view["schema"], "ok");
}

#[test]
fn users_mime_message_is_nested() {
    let mime = "Content-Type: multipart/mixed; boundary=\"XyZ\"\nMIME-Version: 1.0\n\n\
        --XyZ\nContent-Type: text/cloud-config\n\n#cloud-config\npackages: [curl]\n\
        --XyZ\nContent-Type: text/x-shellscript\n\n#!/bin/sh\ntrue\n--XyZ--\n";
    let Some(view) = cloud_init_view(&config(Some(mime))) else {
        return;
    };
    assert_eq!(
        part_types(&view),
        [
            "text/cloud-config",
            "text/x-shellscript",
            "text/cloud-config"
        ]
    );
    assert_eq!(view["cloud_config"]["packages"], json!(["curl"]));
    assert_eq!(view["cloud_config"]["ssh_authorized_keys"], json!([KEY]));
    assert_eq!(view["schema"], "ok");
}

#[test]
fn pyyaml_reads_what_vessel_wrote() {
    if !have_python_yaml() {
        return;
    }
    let files = cloudinit::render(&config(None)).unwrap_or_else(|e| panic!("{e}"));
    let code = "import json, sys, yaml\nprint(json.dumps([yaml.safe_load(open(p)) for p in sys.argv[1:]]))";
    let dir = tempdir();
    let paths: Vec<_> = [
        ("m", &files.meta_data),
        ("u", &files.user_data),
        ("n", &files.network_config),
    ]
    .iter()
    .map(|(name, body)| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap_or_else(|e| panic!("{e}"));
        p
    })
    .collect();
    let out = run_ok(
        Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(code)
            .args(&paths),
    );
    let docs: Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(docs[0]["local-hostname"], "yes");
    assert_eq!(docs[1]["ssh_authorized_keys"][0], KEY);
    assert_eq!(
        docs[2]["ethernets"]["nic0"]["match"]["macaddress"],
        "52:54:00:12:34:56"
    );
}
