//! `vessel snapshot take/ls/restore/rm`: disk snapshots of powered-off VMs.
//!
//! Taking a snapshot freezes each writable disk's current image and points the VM at a new
//! qcow2 overlay over it; restoring replaces the current overlays with fresh ones over the
//! snapshot's images; removing a snapshot folds its image into the images that back onto
//! it. The tree lives in `snapshots.toml` (see `snapshot_tree`); every change is recorded
//! there as pending before files are created, and vm.toml's atomic rewrite is its commit
//! point, so an interrupted command is finished or undone by the next one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use toml::Spanned;

use crate::snapshot_merge::{backing_of, chain_files, create_overlay, merge_into_child};
use crate::snapshot_tree::{self, Pending, Snapshot, SnapshotDisk, SnapshotMeta};
use crate::state::{self, StateDir, VmDir, VmLock};
use crate::vmdef::VmDefinition;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot the disks of a stopped VM: their images become read-only, the VM writes
    /// to new overlays.
    Take {
        /// The stopped VM.
        vm: String,
        /// Name of the new snapshot.
        name: String,
        /// A note shown by `snapshot ls`.
        #[arg(long)]
        description: Option<String>,
    },
    /// Show a VM's snapshots as a tree, and where the current state hangs.
    Ls {
        /// The VM.
        vm: String,
        /// Print JSON: each snapshot's parent, children, time, description and disks.
        #[arg(long)]
        json: bool,
    },
    /// Discard the current state of a stopped VM's disks and go back to a snapshot.
    Restore {
        /// The stopped VM.
        vm: String,
        /// The snapshot to go back to.
        name: String,
    },
    /// Delete a snapshot, merging its data into the images that depend on it.
    Rm {
        /// The stopped VM.
        vm: String,
        /// The snapshot to delete.
        name: String,
    },
}

pub fn run(state_dir: Option<PathBuf>, cmd: SnapshotCommand) -> Result<i32> {
    let state = StateDir::new(state_dir)?;
    match cmd {
        SnapshotCommand::Take {
            vm,
            name,
            description,
        } => take(&state, &vm, &name, description.unwrap_or_default()),
        SnapshotCommand::Ls { vm, json } => ls(&state, &vm, json),
        SnapshotCommand::Restore { vm, name } => restore(&state, &vm, &name),
        SnapshotCommand::Rm { vm, name } => rm(&state, &vm, &name),
    }
}

/// A stopped VM, locked against `vessel start` for as long as this lives, with its
/// metadata brought up to date.
struct Session {
    vm: VmDir,
    _lock: VmLock,
    meta: SnapshotMeta,
}

fn open_stopped(state: &StateDir, name: &str) -> Result<Session> {
    let mut vm = state.vm(name)?;
    vm.definition()?;
    vm.dir = std::fs::canonicalize(&vm.dir)?;
    let lock = vm.try_lock()?.ok_or_else(|| {
        crate::exit::usage(format!(
            "VM '{name}' is running (or another vessel command holds its lock): snapshots \
             are taken of powered-off VMs; stop it first with `vessel stop {name}`"
        ))
    })?;
    crate::suspend_cli::refuse_if_suspended(&vm, "a disk snapshot")?;
    let mut s = Session {
        meta: SnapshotMeta::load(&vm.dir)?,
        vm,
        _lock: lock,
    };
    s.recover()?;
    Ok(s)
}

fn disk_paths(def: &VmDefinition) -> BTreeSet<PathBuf> {
    def.disks.iter().map(|d| d.path.get_ref().clone()).collect()
}

fn disk_format(d: &crate::vmdef::Disk) -> Result<block::Format> {
    match &d.format {
        Some(f) => f
            .get_ref()
            .parse()
            .map_err(|e: block::Error| anyhow!("{e}")),
        None => block::detect(d.path.get_ref())
            .with_context(|| format!("disk {}", d.path.get_ref().display())),
    }
}

/// The disk's image opens with its own `allow-external-backing` setting: overlays made
/// over it follow its chain, so a chain the VM could not start with is refused here.
fn check_chain(d: &crate::vmdef::Disk, format: block::Format) -> Result<()> {
    let opts = block::OpenOptions {
        read_only: true,
        format: Some(format),
        allow_external_backing: d.allow_external_backing,
    };
    block::open(d.path.get_ref(), &opts)
        .map(drop)
        .with_context(|| format!("disk {}", d.path.get_ref().display()))
}

fn parse_format(name: &str) -> Result<block::Format> {
    name.parse().map_err(|e: block::Error| anyhow!("{e}"))
}

/// Store `def` as the VM's vm.toml atomically; what is stored must read back.
fn write_definition(vm: &VmDir, def: &VmDefinition) -> Result<()> {
    let text = toml::to_string_pretty(def)?;
    VmDefinition::parse(&vm.path(state::DEFINITION), &text)?;
    snapshot_tree::write_atomic(&vm.path(state::DEFINITION), text.as_bytes())
}

/// Point disk `index` of `def` at a new overlay.
fn use_overlay(def: &mut VmDefinition, index: usize, overlay: &Path) {
    let d = &mut def.disks[index];
    // An overlay over a disk in another directory names it by its absolute path.
    d.allow_external_backing |= d.path.get_ref().parent() != overlay.parent();
    d.path = Spanned::new(0..0, overlay.to_path_buf());
    d.format = Some(Spanned::new(0..0, "qcow2".into()));
    d.size = None;
}

impl Session {
    fn definition(&self) -> Result<VmDefinition> {
        self.vm.definition()
    }

    /// Finish or undo a change a previous command left pending, then delete garbage.
    fn recover(&mut self) -> Result<()> {
        if let Some(p) = self.meta.pending.take() {
            let disks = disk_paths(&self.definition()?);
            let committed = !p.created.is_empty() && p.created.iter().all(|c| disks.contains(c));
            let mut garbage = std::mem::take(&mut self.meta.garbage);
            if committed {
                self.meta = p.after;
                garbage.extend(p.discard);
            } else {
                garbage.extend(p.created);
                // Never hand out the names of the undone files again.
                self.meta.next_layer = self.meta.next_layer.max(p.after.next_layer);
            }
            self.meta.garbage.extend(garbage);
            self.meta.save(&self.vm.dir)?;
        }
        self.collect_garbage()
    }

    /// Delete the files listed as garbage: only files vessel created in the VM directory
    /// that neither the metadata nor vm.toml references.
    fn collect_garbage(&mut self) -> Result<()> {
        if self.meta.garbage.is_empty() {
            return Ok(());
        }
        let mut keep = self.meta.referenced();
        keep.extend(disk_paths(&self.definition()?));
        for g in std::mem::take(&mut self.meta.garbage) {
            let ours = g.parent() == Some(self.vm.dir.as_path())
                && g.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with("layer-") || n.starts_with(".merge-")
                });
            if !ours || keep.contains(&g) {
                continue;
            }
            match std::fs::remove_file(&g) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.meta.garbage.push(g.clone());
                    eprintln!("vessel: warning: cannot remove {}: {e}", g.display());
                }
            }
        }
        self.meta.save(&self.vm.dir)
    }

    /// Record the change (`after`, creating `created`, dropping `discard`) as pending, make
    /// the files, write `def` (the commit point), then settle the metadata either way.
    fn commit(
        &mut self,
        after: SnapshotMeta,
        created: Vec<PathBuf>,
        discard: Vec<PathBuf>,
        def: &VmDefinition,
        make_files: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        if created.is_empty() {
            // Nothing to undo: no commit point needed.
            make_files()?;
            write_definition(&self.vm, def)?;
            self.meta = after;
            self.meta.garbage.extend(discard);
            self.meta.save(&self.vm.dir)?;
            return self.collect_garbage();
        }
        self.meta.pending = Some(Box::new(Pending {
            created,
            discard,
            after,
        }));
        self.meta.save(&self.vm.dir)?;
        let result = make_files().and_then(|()| write_definition(&self.vm, def));
        // vm.toml says whether the change happened: finish it or undo it.
        let settled = self.recover();
        result?;
        settled
    }

    /// Refuse when a disk of another VM (a linked clone) reads through one of `files`.
    fn check_not_used_elsewhere(&self, state: &StateDir, files: &[PathBuf]) -> Result<()> {
        let files: BTreeSet<PathBuf> = files
            .iter()
            .map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()))
            .collect();
        if files.is_empty() {
            return Ok(());
        }
        for other in state.list()? {
            if other == self.vm.name {
                continue;
            }
            let Ok(def) = state.vm(&other)?.definition() else {
                continue;
            };
            for d in &def.disks {
                let chain = chain_files(d.path.get_ref()).unwrap_or_default();
                if let Some(f) = chain.iter().find(|f| files.contains(*f)) {
                    bail!(
                        "VM '{other}' has a disk that reads through {} (a linked clone?); \
                         remove it or clone it fully first",
                        f.display()
                    );
                }
            }
        }
        Ok(())
    }
}

fn take(state: &StateDir, vm_name: &str, name: &str, description: String) -> Result<i32> {
    let mut s = open_stopped(state, vm_name)?;
    s.meta.check_new_name(name)?;
    let mut def = s.definition()?;
    let mut after = s.meta.clone();
    let mut disks = Vec::new();
    let mut plans = Vec::new();
    for i in 0..def.disks.len() {
        let d = &def.disks[i];
        let image = d.path.get_ref().clone();
        let format = disk_format(d)?;
        check_chain(d, format)?;
        if d.readonly {
            disks.push(SnapshotDisk {
                index: i,
                image,
                format: format.name().into(),
                readonly: true,
                owned: false,
            });
            continue;
        }
        let overlay = s.vm.path(&after.next_layer_name(i));
        disks.push(SnapshotDisk {
            index: i,
            owned: s.meta.current_layers.contains(&image),
            image: image.clone(),
            format: format.name().into(),
            readonly: false,
        });
        plans.push((overlay.clone(), image, format));
        use_overlay(&mut def, i, &overlay);
    }
    if plans.is_empty() {
        bail!("VM '{vm_name}' has no writable disk to snapshot");
    }
    let created: Vec<PathBuf> = plans.iter().map(|p| p.0.clone()).collect();
    after.snapshots.push(Snapshot {
        name: name.to_string(),
        parent: s.meta.current.clone(),
        created: snapshot_tree::now(),
        description,
        disks,
    });
    after.current = Some(name.to_string());
    after.current_layers = created.clone();
    s.commit(after, created, vec![], &def, || {
        for (overlay, image, format) in &plans {
            create_overlay(overlay, image, *format)?;
        }
        Ok(())
    })?;
    println!(
        "took snapshot '{name}' of VM '{vm_name}' ({} disk(s) now write to new overlays)",
        plans.len()
    );
    Ok(0)
}

fn restore(state: &StateDir, vm_name: &str, name: &str) -> Result<i32> {
    let mut s = open_stopped(state, vm_name)?;
    let snap = s.meta.get(name).cloned().ok_or_else(|| {
        anyhow!(
            "VM '{vm_name}' has no snapshot named '{name}' (see `vessel snapshot ls {vm_name}`)"
        )
    })?;
    let mut def = s.definition()?;
    if snap.disks.len() != def.disks.len() {
        bail!(
            "VM '{vm_name}' has {} disk(s) but snapshot '{name}' has {}: \
             put the disks back in vm.toml before restoring",
            def.disks.len(),
            snap.disks.len()
        );
    }
    let referenced: BTreeSet<PathBuf> = s
        .meta
        .snapshots
        .iter()
        .flat_map(|x| x.disks.iter().map(|d| d.image.clone()))
        .collect();
    let discard: Vec<PathBuf> = s
        .meta
        .current_layers
        .iter()
        .filter(|l| !referenced.contains(*l))
        .cloned()
        .collect();
    s.check_not_used_elsewhere(state, &discard)?;
    let mut after = s.meta.clone();
    let mut plans = Vec::new();
    for d in snap.disks.iter().filter(|d| !d.readonly) {
        let overlay = s.vm.path(&after.next_layer_name(d.index));
        plans.push((overlay.clone(), d.image.clone(), parse_format(&d.format)?));
        use_overlay(&mut def, d.index, &overlay);
    }
    let created: Vec<PathBuf> = plans.iter().map(|p| p.0.clone()).collect();
    after.current = Some(name.to_string());
    after.current_layers = created.clone();
    s.commit(after, created, discard, &def, || {
        for (overlay, image, format) in &plans {
            create_overlay(overlay, image, *format)?;
        }
        Ok(())
    })?;
    println!("restored VM '{vm_name}' to snapshot '{name}'");
    Ok(0)
}

fn rm(state: &StateDir, vm_name: &str, name: &str) -> Result<i32> {
    let mut s = open_stopped(state, vm_name)?;
    let snap = s.meta.get(name).cloned().ok_or_else(|| {
        anyhow!(
            "VM '{vm_name}' has no snapshot named '{name}' (see `vessel snapshot ls {vm_name}`)"
        )
    })?;
    let def = s.definition()?;
    let owned: Vec<PathBuf> = snap
        .disks
        .iter()
        .filter(|d| d.owned && !d.readonly)
        .map(|d| d.image.clone())
        .collect();
    s.check_not_used_elsewhere(state, &owned)?;
    // Every image that could back onto a snapshot's image: the other snapshots' images
    // and the VM's current disks.
    let mut candidates: BTreeSet<PathBuf> = disk_paths(&def);
    for other in s.meta.snapshots.iter().filter(|x| x.name != name) {
        candidates.extend(
            other
                .disks
                .iter()
                .filter(|d| !d.readonly)
                .map(|d| d.image.clone()),
        );
    }
    // Only images vessel made are rewritten: find every child first, refuse before
    // touching anything if one is not ours.
    let mut ours: BTreeSet<PathBuf> = s.meta.current_layers.iter().cloned().collect();
    for other in &s.meta.snapshots {
        ours.extend(
            other
                .disks
                .iter()
                .filter(|d| d.owned)
                .map(|d| d.image.clone()),
        );
    }
    let mut merges = Vec::new();
    for image in &owned {
        let canonical = std::fs::canonicalize(image)
            .with_context(|| format!("snapshot '{name}' image {}", image.display()))?;
        for child in candidates.iter().filter(|c| *c != image) {
            if backing_of(child)?.as_deref() != Some(canonical.as_path()) {
                continue;
            }
            if !ours.contains(child) {
                bail!(
                    "{} (not made by vessel) reads through snapshot '{name}', which would have \
                     to be merged into it; point the VM's disk elsewhere first",
                    child.display()
                );
            }
            merges.push((image.clone(), child.clone()));
        }
    }
    let merged = merges.len();
    for (image, child) in merges {
        let file = child.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = s.vm.path(&format!(".merge-{}", file.unwrap_or_default()));
        // Listed first, so a crash mid-merge leaves no stray file for long.
        s.meta.garbage.push(tmp.clone());
        s.meta.save(&s.vm.dir)?;
        merge_into_child(&image, &child, &tmp)?;
    }
    s.meta.remove(name)?;
    s.meta.garbage.extend(owned);
    s.meta.save(&s.vm.dir)?;
    s.collect_garbage()?;
    println!("removed snapshot '{name}' of VM '{vm_name}' (merged into {merged} image(s))");
    Ok(0)
}

fn ls(state: &StateDir, vm_name: &str, json: bool) -> Result<i32> {
    let vm = state.vm(vm_name)?;
    vm.definition()?;
    // A stopped VM gets any interrupted change settled first; a running one is shown as is.
    let meta = match open_stopped(state, vm_name) {
        Ok(s) => s.meta,
        Err(_) => SnapshotMeta::load(&vm.dir)?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&meta.to_json())?);
    } else if meta.snapshots.is_empty() {
        println!("VM '{vm_name}' has no snapshots");
    } else {
        print!("{}", meta.render_tree());
    }
    Ok(0)
}

/// The VM's snapshots for `vessel inspect` (null when its metadata cannot be read).
pub fn inspect_json(vm: &VmDir) -> serde_json::Value {
    SnapshotMeta::load(&vm.dir)
        .map(|m| m.to_json())
        .unwrap_or(serde_json::Value::Null)
}

/// Files in the VM directory that the VM's disks read through (their backing chains), for
/// `vessel rm --keep-disks`: a kept overlay is useless without the images under it.
pub fn chain_files_in_dir(vm: &VmDir, def: &VmDefinition) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::canonicalize(&vm.dir) else {
        return Vec::new();
    };
    def.disks
        .iter()
        .flat_map(|d| chain_files(d.path.get_ref()).unwrap_or_default())
        .filter(|f| f.parent() == Some(dir.as_path()))
        .filter_map(|f| f.file_name().map(|n| vm.dir.join(n)))
        .collect()
}
