//! Running a VM's `[[provision]]` entries over SSH: `vessel provision NAME [--only P]`, and
//! on a VM's first start (`vessel start`, `vessel up`). Output streams live with a prefix
//! per provisioner, as Vagrant's does; the first failure stops the run with its exit status
//! and leaves the VM running. What ran is recorded in the VM's `provisioned` file, so a
//! later start does not run it again.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{anyhow, Context, Result};
use clap::Args;

use crate::provision_def::{Action, AnsiblePlay};
use crate::ssh_cli::Target;
use crate::state::{StateDir, VmDir};

/// In a VM's directory: the names of the provisioners that ran, one per line.
pub const DONE_FILE: &str = "provisioned";

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// The running VM to provision.
    name: String,
    /// Run only the provisioner with this name (e.g. `shell-1`, or its `name`).
    #[arg(long, value_name = "PROVISIONER")]
    only: Option<String>,
    /// Seconds to wait for the guest's sshd.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// `vessel provision`: every provisioner (or `--only` one), whether it ran before or not.
pub fn provision(state: &StateDir, args: ProvisionArgs) -> Result<i32> {
    let vm = state.vm(&args.name)?;
    let def = vm.definition()?;
    let all: Vec<usize> = (0..def.provisions.len()).collect();
    let chosen = match &args.only {
        None => all,
        Some(only) => {
            let i = all
                .into_iter()
                .find(|&i| def.provisions[i].get_ref().display_name(i) == *only)
                .ok_or_else(|| {
                    crate::exit::usage(format!(
                        "VM '{}' has no provisioner named '{only}' (names: {})",
                        args.name,
                        names(&vm).join(", ")
                    ))
                })?;
            vec![i]
        }
    };
    if chosen.is_empty() {
        println!("VM '{}' has no [[provision]] entries", args.name);
        return Ok(0);
    }
    run(state, &vm, &chosen, args.timeout)
}

/// After a start: run the provisioners that never ran (none: nothing to wait for).
pub fn run_pending(state: &StateDir, name: &str, timeout: u64) -> Result<i32> {
    let vm = state.vm(name)?;
    let def = vm.definition()?;
    let done = done_names(&vm);
    let pending: Vec<usize> = (0..def.provisions.len())
        .filter(|&i| !done.contains(&def.provisions[i].get_ref().display_name(i)))
        .collect();
    if pending.is_empty() {
        return Ok(0);
    }
    run(state, &vm, &pending, timeout)
}

fn names(vm: &VmDir) -> Vec<String> {
    let Ok(def) = vm.definition() else {
        return Vec::new();
    };
    let list = def.provisions.iter().enumerate();
    list.map(|(i, p)| p.get_ref().display_name(i)).collect()
}

fn done_names(vm: &VmDir) -> Vec<String> {
    let text = std::fs::read_to_string(vm.path(DONE_FILE)).unwrap_or_default();
    text.lines().map(str::to_string).collect()
}

fn record_done(vm: &VmDir, name: &str) -> Result<()> {
    let mut done = done_names(vm);
    if !done.iter().any(|d| d == name) {
        done.push(name.to_string());
    }
    let text: String = done.iter().map(|d| format!("{d}\n")).collect();
    crate::snapshot_tree::write_atomic(&vm.path(DONE_FILE), text.as_bytes())
}

fn run(state: &StateDir, vm: &VmDir, which: &[usize], timeout: u64) -> Result<i32> {
    let def = vm.definition()?;
    let target = crate::ssh_cli::target(state, &vm.name, None, timeout)?;
    for &i in which {
        let p = def.provisions[i].get_ref();
        let pname = p.display_name(i);
        let action = p
            .action()
            .ok_or_else(|| anyhow!("provisioner {pname} is invalid"))?;
        println!("==> {}: running provisioner {pname}", vm.name);
        let prefix = format!("    {}/{pname}: ", vm.name);
        let code = match action {
            Action::Shell(script) => {
                shell(&target, script.as_bytes(), &p.args, p.privileged(), &prefix)?
            }
            Action::Script(path) => {
                let body = std::fs::read(path)
                    .with_context(|| format!("provisioner {pname}: {}", path.display()))?;
                shell(&target, &body, &p.args, p.privileged(), &prefix)?
            }
            Action::File(src, dst) => copy(&target, src, dst, &prefix)?,
            Action::Ansible(play) => ansible(vm, &target, play, &prefix)?,
        };
        if code != 0 {
            eprintln!(
                "vessel: provisioner {pname} of VM '{}' failed with exit status {code}; the VM keeps running (vessel provision {} --only {pname} runs it again)",
                vm.name, vm.name
            );
            return Ok(code);
        }
        record_done(vm, &pname)?;
    }
    Ok(0)
}

/// `ssh` to the VM with vessel's options, running `remote`.
fn ssh(target: &Target, remote: &str) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(&target.options)
        .args(["-p", &target.port.to_string()])
        .arg(format!("{}@127.0.0.1", target.user))
        .arg(remote);
    cmd
}

/// Upload `script` to a temporary file in the guest and run it (with sudo if privileged);
/// a script without `#!` runs with /bin/sh.
fn shell(
    target: &Target,
    script: &[u8],
    args: &[String],
    privileged: bool,
    prefix: &str,
) -> Result<i32> {
    let quoted: Vec<String> = args.iter().map(|a| quote(a)).collect();
    let sudo = if privileged { "sudo " } else { "" };
    let runner = if script.starts_with(b"#!") {
        ""
    } else {
        "/bin/sh "
    };
    let remote = format!(
        "f=$(mktemp) && cat > \"$f\" && chmod +x \"$f\" && {sudo}{runner}\"$f\" {}; rc=$?; rm -f \"$f\"; exit $rc",
        quoted.join(" ")
    );
    let mut cmd = ssh(target, &remote);
    stream(&mut cmd, Some(script), prefix)
}

fn copy(target: &Target, src: &Path, dst: &str, prefix: &str) -> Result<i32> {
    let mut cmd = Command::new("scp");
    cmd.args(&target.options)
        .args(["-r", "-P", &target.port.to_string()])
        .arg(src)
        .arg(format!("{}@127.0.0.1:{dst}", target.user));
    stream(&mut cmd, None, prefix)
}

fn ansible(vm: &VmDir, target: &Target, play: &AnsiblePlay, prefix: &str) -> Result<i32> {
    let inventory = vm.path("ansible-inventory.ini");
    std::fs::write(
        &inventory,
        format!("{}\n", crate::inventory_cli::ini_line(&vm.name, target)),
    )?;
    let mut cmd = Command::new("ansible-playbook");
    cmd.arg("-i").arg(&inventory).args(["--limit", &vm.name]);
    if !play.extra_vars.is_empty() {
        cmd.arg("--extra-vars")
            .arg(serde_json::to_string(&play.extra_vars)?);
    }
    cmd.arg(play.playbook.get_ref());
    if let Some(dir) = play.playbook.get_ref().parent() {
        cmd.current_dir(dir);
    }
    cmd.env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0");
    stream(&mut cmd, None, prefix).map_err(|e| {
        if which("ansible-playbook") {
            e
        } else {
            anyhow!("the ansible provisioner needs ansible-playbook (Debian package ansible-core)")
        }
    })
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Run `cmd`, feeding `input`, printing each line of its output with `prefix`; its exit
/// status (128+signal when killed).
fn stream(cmd: &mut Command, input: Option<&[u8]>, prefix: &str) -> Result<i32> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(data).context("sending the script")?;
    }
    let out = child
        .stdout
        .take()
        .map(|o| relay(o, prefix.to_string(), false));
    let err = child
        .stderr
        .take()
        .map(|e| relay(e, prefix.to_string(), true));
    for t in [out, err].into_iter().flatten() {
        let _ = t.join();
    }
    let status = child.wait()?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

fn relay(
    from: impl Read + Send + 'static,
    prefix: String,
    to_stderr: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if to_stderr {
                eprintln!("{prefix}{line}");
            } else {
                println!("{prefix}{line}");
            }
        }
    })
}

/// One word for a POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_remote_shell() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(x)"), "'$(x)'");
    }

    #[test]
    fn output_lines_carry_the_prefix_and_the_status_passes_through() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat; echo err >&2; exit 3"]);
        assert_eq!(stream(&mut cmd, Some(b"hello\n"), "    vm/p: ").unwrap(), 3);
    }
}
