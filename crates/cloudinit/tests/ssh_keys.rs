//! The owner's key pair with the real `ssh-keygen`: made once with the right modes, reused
//! after, its public half accepted as an authorized key; and `known_hosts` lines that
//! `ssh-keygen -F` finds.

mod common;

use cloudinit::{ensure_user_key, known_hosts_lines, parse_console_host_keys};
use common::{have, run_ok, tempdir};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0)
}

#[test]
fn key_is_made_once_and_reused() {
    if !have("ssh-keygen", "openssh-client") {
        return;
    }
    let top = tempdir();
    let dir = top.path().join("keys");
    let pair = ensure_user_key(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&pair.private_key), 0o600);
    let line = pair.public_key_line().unwrap_or_default();
    assert!(
        line.starts_with("ssh-ed25519 ") && line.ends_with(" vessel"),
        "{line}"
    );
    let mut c = common::config(None);
    c.ssh_authorized_keys = vec![line.clone()];
    assert!(cloudinit::render(&c).is_ok());

    let again = ensure_user_key(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, pair);
    assert_eq!(again.public_key_line().unwrap_or_default(), line);

    // A lost .pub is derived from the private key again.
    std::fs::remove_file(&pair.public_key).unwrap_or_else(|e| panic!("{e}"));
    let third = ensure_user_key(&dir).unwrap_or_else(|e| panic!("{e}"));
    let derived = third.public_key_line().unwrap_or_default();
    assert_eq!(
        derived.split(' ').take(2).collect::<Vec<_>>(),
        line.split(' ').take(2).collect::<Vec<_>>()
    );
    let leftovers = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 2);
}

#[test]
fn known_hosts_from_console_works_with_ssh_keygen() {
    if !have("ssh-keygen", "openssh-client") {
        return;
    }
    let dir = tempdir();
    let host_key = dir.path().join("ssh_host_ed25519_key");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "root@vm", "-f"])
            .arg(&host_key),
    );
    let pub_line =
        std::fs::read_to_string(dir.path().join("ssh_host_ed25519_key.pub")).unwrap_or_default();
    let console = format!(
        "[  OK  ] Started ssh.service\r\n-----BEGIN SSH HOST KEY KEYS-----\r\n{}\r\n-----END SSH HOST KEY KEYS-----\r\n",
        pub_line.trim()
    );
    let keys = parse_console_host_keys(&console);
    assert_eq!(keys.len(), 1);
    let text = known_hosts_lines("127.0.0.1", 2222, &keys).unwrap_or_default();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, &text).unwrap_or_else(|e| panic!("{e}"));
    let found = run_ok(
        Command::new("ssh-keygen")
            .arg("-F")
            .arg("[127.0.0.1]:2222")
            .arg("-f")
            .arg(&known),
    );
    assert!(found.contains(&keys[0].base64), "{found}");
}
