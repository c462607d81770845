//! Moving VMs as files: `vessel clone` (full copies, or linked qcow2 overlays on the
//! source's disks) and `vessel export` / `vessel import` (one tar archive holding the
//! definition, the boot files and the disks, holes preserved).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use crate::state::{self, StateDir, VmDir};
use crate::vmdef::VmDefinition;

pub(crate) fn stopped(vm: &VmDir) -> Result<VmDefinition> {
    let def = vm.definition()?;
    if vm.state()?.vmm_pid().is_some() {
        return Err(crate::exit::usage(format!(
            "VM '{}' is running; stop it first",
            vm.name
        )));
    }
    crate::suspend_cli::refuse_if_suspended(vm, "copying its disks")?;
    Ok(def)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk".into())
}

pub(crate) fn write_definition(vm: &VmDir, def: &VmDefinition) -> Result<()> {
    let text = toml::to_string_pretty(def)?;
    // What we store must read back.
    VmDefinition::parse(&vm.path(state::DEFINITION), &text)?;
    std::fs::write(vm.path(state::DEFINITION), text)?;
    Ok(())
}

/// `vessel clone SRC DST [--linked]`.
pub fn clone(state: &StateDir, src: &str, dst: &str, linked: bool, json: bool) -> Result<i32> {
    let from = state.vm(src)?;
    let mut def = stopped(&from)?;
    let to = state.vm(dst)?;
    if to.exists() {
        return Err(crate::exit::usage(format!(
            "a VM named '{dst}' already exists"
        )));
    }
    state::ensure_dir(&to.dir)?;
    let result = (|| -> Result<()> {
        for (i, disk) in def.disks.iter_mut().enumerate() {
            let source = disk.path.get_ref().clone();
            if disk.readonly && !linked {
                continue; // read-only disks can be shared as they are
            }
            let target = to.path(&format!("disk{i}-{}", file_name(&source)));
            if linked {
                let target = target.with_extension("qcow2");
                let size = block::open(
                    &source,
                    &block::OpenOptions {
                        read_only: true,
                        format: None,
                        allow_external_backing: disk.allow_external_backing,
                    },
                )?
                .size();
                let opts = block::CreateOptions {
                    backing: Some((source.clone(), None)),
                    ..Default::default()
                };
                block::create(&target, block::Format::Qcow2, size, &opts)
                    .with_context(|| format!("creating overlay {}", target.display()))?;
                disk.path = toml::Spanned::new(0..0, target);
                disk.format = Some(toml::Spanned::new(0..0, "qcow2".into()));
                // The overlay names the source disk by its path, in another directory.
                disk.allow_external_backing = true;
            } else {
                let format = block::detect(&source)?;
                let from = source_opts(format, disk.allow_external_backing);
                crate::disk_cli::convert::convert(&source, &target, format, &from, None)
                    .with_context(|| format!("copying {}", source.display()))?;
                disk.path = toml::Spanned::new(0..0, target);
                disk.format = Some(toml::Spanned::new(0..0, format.name().into()));
                // A full copy is one file.
                disk.allow_external_backing = false;
            }
            disk.size = None;
        }
        def.name = toml::Spanned::new(0..0, dst.to_string());
        write_definition(&to, &def)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&to.dir);
        return Err(e);
    }
    if json {
        return Ok(0); // the caller prints the summary
    }
    println!(
        "cloned '{src}' to '{dst}'{}",
        if linked {
            " (linked: disks are overlays of the source's)"
        } else {
            ""
        }
    );
    Ok(0)
}

/// `vessel export NAME FILE`: a tar archive with `vm.toml` (relative paths), `boot/` and
/// `disks/`.
pub fn export(state: &StateDir, name: &str, file: &Path) -> Result<i32> {
    let vm = state.vm(name)?;
    let mut def = stopped(&vm)?;
    let staging = tempdir_in(&state.root, "export")?;
    let result = (|| -> Result<()> {
        std::fs::create_dir_all(staging.join("boot"))?;
        std::fs::create_dir_all(staging.join("disks"))?;
        let link = |src: &Path, rel: String| -> Result<PathBuf> {
            std::os::unix::fs::symlink(src, staging.join(&rel))
                .with_context(|| format!("staging {}", src.display()))?;
            Ok(PathBuf::from(rel))
        };
        let kernel = link(
            def.boot.kernel.get_ref(),
            format!("boot/{}", file_name(def.boot.kernel.get_ref())),
        )?;
        def.boot.kernel = toml::Spanned::new(0..0, kernel);
        if let Some(i) = &def.boot.initrd {
            let initrd = link(
                i.get_ref(),
                format!("boot/initrd-{}", file_name(i.get_ref())),
            )?;
            def.boot.initrd = Some(toml::Spanned::new(0..0, initrd));
        }
        for (n, d) in def.disks.iter_mut().enumerate() {
            let rel = format!("disks/{n}-{}", file_name(d.path.get_ref()));
            let rel = if has_backing(d.path.get_ref(), d.allow_external_backing)? {
                // An overlay (snapshots, linked clones) names files outside the archive:
                // export its flattened content instead.
                let format = block::detect(d.path.get_ref())?;
                let from = source_opts(format, d.allow_external_backing);
                crate::disk_cli::convert::convert(
                    d.path.get_ref(),
                    &staging.join(&rel),
                    format,
                    &from,
                    None,
                )
                .with_context(|| format!("flattening {}", d.path.get_ref().display()))?;
                PathBuf::from(rel)
            } else {
                link(d.path.get_ref(), rel)?
            };
            d.path = toml::Spanned::new(0..0, rel);
            d.size = None;
            d.allow_external_backing = false;
        }
        std::fs::write(
            staging.join(state::DEFINITION),
            toml::to_string_pretty(&def)?,
        )?;
        let status = Command::new("tar")
            .args(["--create", "--sparse", "--dereference", "--file"])
            .arg(file)
            .arg("-C")
            .arg(&staging)
            .args([state::DEFINITION, "boot", "disks"])
            .status()
            .context("cannot run tar")?;
        if !status.success() {
            bail!("tar failed ({status})");
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result?;
    println!("exported '{name}' to {}", file.display());
    Ok(0)
}

/// `vessel import FILE [--name NAME]`.
pub fn import(state: &StateDir, file: &Path, name: Option<&str>) -> Result<i32> {
    let staging = tempdir_in(&state.root, "import")?;
    let result = (|| -> Result<String> {
        let status = Command::new("tar")
            .args(["--extract", "--no-same-owner", "--file"])
            .arg(file)
            .arg("-C")
            .arg(&staging)
            .status()
            .context("cannot run tar")?;
        if !status.success() {
            bail!(
                "{} is not a vessel archive (tar failed: {status})",
                file.display()
            );
        }
        let mut def = VmDefinition::load(&staging.join(state::DEFINITION))
            .context("the archive's vm.toml")?;
        check_archive_paths(&def, &staging)?;
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| def.name.get_ref().clone());
        let vm = state.vm(&name)?;
        if vm.exists() {
            return Err(crate::exit::usage(format!(
                "a VM named '{name}' already exists (use --name)"
            )));
        }
        std::fs::rename(&staging, &vm.dir)
            .with_context(|| format!("moving into {}", vm.dir.display()))?;
        def.resolve_paths(&vm.dir);
        def.name = toml::Spanned::new(0..0, name.clone());
        // An archive cannot grant its images names outside their directory.
        for d in &mut def.disks {
            d.allow_external_backing = false;
        }
        write_definition(&vm, &def)?;
        Ok(name)
    })();
    match result {
        Ok(name) => {
            println!("imported '{name}' from {}", file.display());
            Ok(0)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// An archive may come from anywhere: every file its definition names must be a regular
/// file inside the archive, so an import can never point a VM's disk (or kernel) at a host
/// file such as `~/.ssh/authorized_keys`.
fn check_archive_paths(def: &VmDefinition, staging: &Path) -> Result<()> {
    let mut paths = vec![def.boot.kernel.get_ref()];
    paths.extend(def.boot.initrd.as_ref().map(|i| i.get_ref()));
    paths.extend(def.disks.iter().map(|d| d.path.get_ref()));
    for p in paths {
        let inside = p.is_relative()
            && p.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        let meta = std::fs::symlink_metadata(staging.join(p));
        if !inside || !meta.map(|m| m.file_type().is_file()).unwrap_or(false) {
            bail!(
                "the archive's vm.toml names {}, which is not a file inside the archive",
                p.display()
            );
        }
    }
    // A disk's backing chain (qcow2 backing file, VHD/VHDX parent, VMDK delta) must stay
    // inside the archive too, or the guest could read host files through it.
    let root = std::fs::canonicalize(staging)?;
    for d in &def.disks {
        let image = block::open(
            &staging.join(d.path.get_ref()),
            &block::OpenOptions {
                read_only: true,
                format: None,
                allow_external_backing: false,
            },
        )
        .with_context(|| format!("disk {} in the archive", d.path.get_ref().display()))?;
        // Every file the image opened: backing chain, parents, and each VMDK extent.
        for file in image.files() {
            let real = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
            if !real.starts_with(&root) {
                bail!(
                    "disk {} in the archive reads {}, outside the archive",
                    d.path.get_ref().display(),
                    file.display()
                );
            }
        }
    }
    Ok(())
}

/// How a VM's disk of `format` is read to copy it.
fn source_opts(format: block::Format, allow_external_backing: bool) -> block::OpenOptions {
    block::OpenOptions {
        read_only: true,
        format: Some(format),
        allow_external_backing,
    }
}

/// Whether the image at `path` reads through a backing file (qcow2 overlay, differencing
/// VHD/VHDX, VMDK delta).
fn has_backing(path: &Path, allow_external_backing: bool) -> Result<bool> {
    let image = block::open(
        path,
        &block::OpenOptions {
            read_only: true,
            format: None,
            allow_external_backing,
        },
    )
    .with_context(|| format!("disk {}", path.display()))?;
    Ok(image.backing().is_some())
}

fn tempdir_in(root: &Path, what: &str) -> Result<PathBuf> {
    let dir = root.join(format!(".{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}
