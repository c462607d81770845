//! `vessel fork NAME NEW`: a second running VM from a running one, at the same instant of
//! its life. The source is paused for as long as it takes to write its snapshot into the
//! new VM's directory and to put a qcow2 overlay over each writable disk — one for the
//! source, which switches to it live, and one for the fork, so both go on from the same
//! frozen image. The fork is a suspended VM until `vessel start` resumes it (which
//! `fork` does), its memory mapped lazily from the snapshot (copied into shared memory
//! instead when the VM has shared folders: virtiofsd maps guest memory too).
//!
//! Both guests are the same machine: same MAC, hostname, machine-id, SSH host keys,
//! random state. So only `nat` NICs are forked (each VM has its own NAT: equal MACs never
//! meet on one wire), and forwards need `auto` host ports (the fork gets ports of its own
//! at start). docs/vms.md says what a guest should re-randomise.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use toml::Spanned;

use crate::api_client::{api_call, fault};
use crate::exit::usage;
use crate::state::{self, StateDir, VmDir, VmState};
use crate::suspend_cli::{self, PARTIAL_DIR, STATE_FILE, SUSPENDED_DIR};
use crate::vmdef::VmDefinition;

/// A writable disk both VMs go on from: the image frozen under them, and each one's
/// overlay.
struct ForkedDisk {
    index: usize,
    frozen: PathBuf,
    source_top: PathBuf,
    fork_top: PathBuf,
}

/// `vessel fork SRC DST [--json]`.
pub fn fork(state: &StateDir, src: &str, dst: &str, json: bool) -> Result<i32> {
    let from = state.vm(src)?;
    let def = from.definition()?;
    if !matches!(from.state()?, VmState::Running { .. }) {
        return Err(usage(format!(
            "VM '{src}' is not running (`vessel clone` copies a stopped VM)"
        )));
    }
    let to = state.vm(dst)?;
    if to.exists() || to.dir.exists() {
        return Err(usage(format!("a VM named '{dst}' already exists")));
    }
    forkable(&def)?;
    state::ensure_dir(&to.dir)?;
    let paused = match fork_into(&from, def, &to) {
        Ok(paused) => paused,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&to.dir);
            return Err(e.context(format!("cannot fork VM '{src}'")));
        }
    };
    crate::manage_cli::start(state, dst, true)?;
    if !json {
        println!(
            "forked VM '{src}' to '{dst}' ('{src}' was paused {} ms)",
            paused.as_millis()
        );
    }
    Ok(0)
}

/// Refuses what two equal guests cannot share.
fn forkable(def: &VmDefinition) -> Result<()> {
    for (index, nic) in def.nics.iter().enumerate() {
        if nic.mode.get_ref() != "nat" {
            return Err(usage(format!(
                "NIC {index} is '{}': only nat NICs are forked (the fork has the same MAC, \
                 which must not meet the source's on one network)",
                nic.mode.get_ref()
            )));
        }
        if let Some(f) = nic
            .forward
            .iter()
            .find(|f| !crate::vm_ports::is_auto(f.get_ref()))
        {
            return Err(usage(format!(
                "forward '{}' has a fixed host port, which the fork cannot listen on too; \
                 write it with `auto` (tcp:127.0.0.1:auto-:GUESTPORT) to fork this VM",
                f.get_ref()
            )));
        }
    }
    Ok(())
}

/// Pauses the source, saves it into `to` as a suspended VM, forks its disks, resumes it.
/// Returns how long the source was paused.
fn fork_into(from: &VmDir, mut source_def: VmDefinition, to: &VmDir) -> Result<Duration> {
    let socket = from.path(state::API_SOCKET);
    let partial = to.path(PARTIAL_DIR);
    std::fs::create_dir(&partial)?;
    let drive_ids = drive_ids(&socket)?;
    let started = Instant::now();
    suspend_cli::set_paused(&socket, true)?;
    let mut forked = Vec::new();
    let outcome = (|| -> Result<()> {
        suspend_cli::save_paused(&socket, &partial)?;
        for index in 0..source_def.disks.len() {
            if source_def.disks[index].readonly {
                continue;
            }
            let disk = fork_disk(from, to, &source_def, index)?;
            let id = drive_ids
                .get(index)
                .ok_or_else(|| anyhow!("the VMM reports no drive {index}"))?;
            let external = disk.frozen.parent() != Some(from.dir.as_path());
            switch_drive(&socket, id, &disk.source_top, external).inspect_err(|_| {
                let _ = std::fs::remove_file(&disk.source_top);
            })?;
            // vm.toml follows every switch at once: a restart uses what the VMM uses.
            let d = &mut source_def.disks[index];
            d.path = Spanned::new(0..0, disk.source_top.clone());
            d.format = Some(Spanned::new(0..0, "qcow2".into()));
            d.allow_external_backing |= external;
            d.size = None;
            crate::vm_archive::write_definition(from, &source_def)?;
            forked.push(disk);
        }
        Ok(())
    })();
    let resumed = suspend_cli::set_paused(&socket, false);
    let paused = started.elapsed();
    outcome?;
    resumed.context("the source did not resume")?;
    finish_fork(to, source_def, &forked)?;
    // What was provisioned in the source was provisioned in the fork.
    let done = from.path(crate::provision_cli::DONE_FILE);
    if done.exists() {
        std::fs::copy(&done, to.path(crate::provision_cli::DONE_FILE))?;
    }
    std::fs::rename(&partial, to.path(SUSPENDED_DIR))?;
    Ok(paused)
}

/// The drive ids of the source, in disk order (`GET /vm/config`).
fn drive_ids(socket: &Path) -> Result<Vec<String>> {
    let (status, body) = api_call(socket, "GET", "/vm/config", None)?;
    if status != 200 {
        bail!("GET /vm/config: {}", fault(&body));
    }
    let config: serde_json::Value = serde_json::from_str(&body)?;
    Ok(config["drives"]
        .as_array()
        .map(|drives| {
            drives
                .iter()
                .filter_map(|d| d["drive_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// Puts an overlay for each VM over disk `index` of the source (paused, its image
/// flushed by the switch that follows).
fn fork_disk(from: &VmDir, to: &VmDir, def: &VmDefinition, index: usize) -> Result<ForkedDisk> {
    let disk = &def.disks[index];
    let frozen = disk.path.get_ref().clone();
    let size = block::open(
        &frozen,
        &block::OpenOptions {
            read_only: true,
            format: None,
            allow_external_backing: disk.allow_external_backing,
        },
    )?
    .size();
    let name = frozen
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk".into());
    let source_top = free_name(from, &format!("{name}.fork-{}", to.name));
    let fork_top = to.path(&format!("disk{index}-{name}.qcow2"));
    // The source's overlay names the frozen image by its file name when they share a
    // directory; the fork's names it by its path.
    let same_dir = frozen.parent() == Some(from.dir.as_path());
    let source_backing = if same_dir {
        PathBuf::from(frozen.file_name().unwrap_or_default())
    } else {
        frozen.clone()
    };
    for (path, backing) in [(&fork_top, &frozen), (&source_top, &source_backing)] {
        let opts = block::CreateOptions {
            backing: Some((backing.clone(), None)),
            ..Default::default()
        };
        block::create(path, block::Format::Qcow2, size, &opts)
            .with_context(|| format!("creating overlay {}", path.display()))?;
    }
    Ok(ForkedDisk {
        index,
        frozen,
        source_top,
        fork_top,
    })
}

/// `PREFIX.qcow2` in `vm`'s directory, or `PREFIX-N.qcow2` when that is taken.
fn free_name(vm: &VmDir, prefix: &str) -> PathBuf {
    (0..)
        .map(|n| match n {
            0 => vm.path(&format!("{prefix}.qcow2")),
            n => vm.path(&format!("{prefix}-{n}.qcow2")),
        })
        .find(|p| !p.exists())
        .unwrap_or_default()
}

/// Has the running source write to `top` from now on (`PATCH /drives/{id}`), following
/// its backing file outside the directory when `external`.
fn switch_drive(socket: &Path, id: &str, top: &Path, external: bool) -> Result<()> {
    let mut body = json!({"drive_id": id, "path_on_host": top});
    if external {
        body["allow_external_backing"] = true.into();
    }
    let (status, reply) = api_call(socket, "PATCH", &format!("/drives/{id}"), Some(&body))?;
    if status != 204 {
        bail!(
            "switching drive {id} to {}: {}",
            top.display(),
            fault(&reply)
        );
    }
    Ok(())
}

/// The fork's definition and saved state: the source's, on the fork's overlays.
fn finish_fork(to: &VmDir, source_def: VmDefinition, forked: &[ForkedDisk]) -> Result<()> {
    let state_path = to.path(PARTIAL_DIR).join(STATE_FILE);
    let mut snapshot = vmm::snapshot::read_state_file(&state_path)
        .map_err(|e| anyhow!("{}", crate::run_cli::error_chain(&e)))?;
    let mut def = source_def;
    for disk in forked {
        let saved = snapshot
            .machine
            .disks
            .get_mut(disk.index)
            .ok_or_else(|| anyhow!("the snapshot has no disk {}", disk.index))?;
        if saved.path != disk.frozen
            && saved.path.canonicalize().ok() != disk.frozen.canonicalize().ok()
        {
            bail!(
                "the snapshot's disk {} is {}, not {}",
                disk.index,
                saved.path.display(),
                disk.frozen.display()
            );
        }
        saved.path = disk.fork_top.clone();
        saved.format = Some("qcow2".into());
        let d = &mut def.disks[disk.index];
        d.path = Spanned::new(0..0, disk.fork_top.clone());
        d.format = Some(Spanned::new(0..0, "qcow2".into()));
        // The overlay names the frozen image by its path, in another directory.
        d.allow_external_backing = true;
        d.size = None;
    }
    std::fs::remove_file(&state_path)?;
    vmm::snapshot::write_state_file(&snapshot, &state_path)
        .map_err(|e| anyhow!("{}", crate::run_cli::error_chain(&e)))?;
    def.name = Spanned::new(0..0, to.name.clone());
    crate::vm_archive::write_definition(to, &def)
}
