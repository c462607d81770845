//! `vessel create`: a VM from a definition file (`--from`), an image (`--image`) or a
//! kernel (`--kernel`); the VM flags (`--cpus`, `--memory`, `--kernel`...) apply on top of a
//! file as overrides. Flags are checked where clap reads them, so their errors name the
//! flag; a file's errors name the file's line.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Args;
use toml::Spanned;

use crate::exit::usage;
use crate::state::{self, StateDir, VmDir};
use crate::vmdef::{Disk, VmDefinition};

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the new VM (letters, digits, '-', '_', '.'; at most 63).
    name: String,
    /// A VM definition file (TOML, docs/vm-definition.md); relative paths in it are relative
    /// to the file. The flags below override its fields.
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,
    /// Boot this image of the store (`vessel image ls`): its kernel, an overlay of it as the
    /// first disk, a cloud-init seed with your ssh key, and a NAT NIC with SSH forwarded.
    #[arg(long, conflicts_with_all = ["kernel", "initrd", "cmdline", "from"])]
    image: Option<String>,
    /// With --image: more cloud-init user-data (#cloud-config, a script, MIME).
    #[arg(long, value_name = "FILE")]
    user_data: Option<PathBuf>,
    /// Words added at the end of the kernel command line.
    #[arg(long, default_value = "")]
    cmdline_append: String,
    #[command(flatten)]
    vm: VmFlags,
    /// Print the new VM's summary as JSON (the fields of `vessel ls --json`).
    #[arg(long)]
    json: bool,
}

/// The flags that set fields of a definition (create, and as overrides of --from).
#[derive(Debug, Args)]
pub struct VmFlags {
    /// Guest kernel: bzImage, ELF vmlinux (PVH) or multiboot ELF32.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line (default: console=ttyS0 reboot=k panic=-1).
    #[arg(long)]
    cmdline: Option<String>,
    /// Guest memory with its unit, e.g. 512M or 2G (default 512M).
    #[arg(long, value_parser = checked_memory)]
    memory: Option<String>,
    /// Number of vCPUs (default 1).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=i64::from(vmm::config::MAX_CPUS)))]
    cpus: Option<u8>,
    /// Create a dynamically allocated qcow2 disk of this size for the VM, e.g. 8G (with an
    /// image: the size of the overlay, at least the image's).
    #[arg(long, value_parser = checked_size)]
    disk_size: Option<String>,
}

/// A memory size as written, once it is known to be valid.
fn checked_memory(s: &str) -> Result<String, String> {
    crate::run_cli::parse_memory(s).map(|_| s.to_string())
}

/// A size as written, once it is known to be valid.
fn checked_size(s: &str) -> Result<String, String> {
    crate::size::parse_size(s).map(|_| s.to_string())
}

pub fn create(state: &StateDir, args: CreateArgs) -> Result<i32> {
    let vm = state.vm(&args.name).map_err(|e| usage(e.to_string()))?;
    if vm.exists() {
        return Err(usage(format!("a VM named '{}' already exists", args.name)));
    }
    let mut def = match &args.from {
        Some(file) => from_file(file, &args)?,
        None => from_flags(&vm, &args)?,
    };
    apply_flags(&mut def, &vm, &args)?;
    // Make the VM's files; nothing is left of a VM whose creation failed.
    let made = (|| -> Result<()> {
        let disk_size = match &args.vm.disk_size {
            Some(s) if def.image.is_some() => {
                Some(crate::size::parse_size(s).map_err(|e| anyhow!(e))?)
            }
            _ => None,
        };
        crate::image_vm::provision(state, &vm, &mut def, disk_size)?;
        state::ensure_dir(&vm.dir)?;
        create_sized_disks(&def)?;
        std::fs::write(vm.path(state::DEFINITION), toml::to_string_pretty(&def)?)?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&vm.dir);
        return Err(e);
    }
    if args.json {
        crate::vm_list::print_summary(&vm)?;
    } else {
        println!("created VM '{}' in {}", args.name, vm.dir.display());
    }
    Ok(0)
}

/// The definition of `--from FILE`: checked (files included), paths made absolute, named
/// after the new VM. Its errors name the file's lines.
fn from_file(file: &Path, args: &CreateArgs) -> Result<VmDefinition> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = crate::image_vm::fill_boot(&text)?.unwrap_or(text);
    let mut def = VmDefinition::parse(file, &text)?;
    def.resolve_paths(&file_dir(file)?);
    def.check_files(file, &text)?;
    def.name = Spanned::new(0..0, args.name.clone());
    Ok(def)
}

/// The canonical directory of a definition file.
pub fn file_dir(file: &Path) -> Result<PathBuf> {
    let base = file.parent().filter(|p| !p.as_os_str().is_empty());
    let base = base.unwrap_or(Path::new("."));
    std::fs::canonicalize(base).with_context(|| format!("cannot read {}", base.display()))
}

/// A definition from the flags alone: the name and what it boots. Its errors carry no
/// line (the text is vessel's own, not the user's).
fn from_flags(vm: &VmDir, args: &CreateArgs) -> Result<VmDefinition> {
    let mut t = format!("name = {:?}\n", args.name);
    match (&args.image, &args.vm.kernel) {
        (Some(image), _) => t += &format!("image = {image:?}\n"),
        (None, Some(k)) => t += &format!("[boot]\nkernel = {:?}\n", absolute(k, "kernel")?),
        (None, None) => return Err(usage("give --from FILE, --image NAME or --kernel PATH")),
    }
    let t = crate::image_vm::fill_boot(&t)?.unwrap_or(t);
    VmDefinition::parse(&vm.path(state::DEFINITION), &t).map_err(|e| {
        let messages: Vec<String> = e.errors.into_iter().map(|e| e.message).collect();
        usage(messages.join("; "))
    })
}

fn absolute(p: &Path, what: &str) -> Result<PathBuf> {
    if !p.is_file() {
        return Err(usage(format!(
            "--{what} {} does not exist or is not a file",
            p.display()
        )));
    }
    std::fs::canonicalize(p).with_context(|| format!("--{what} {}", p.display()))
}

/// Put the flags into `def`, over what the file said.
fn apply_flags(def: &mut VmDefinition, vm: &VmDir, args: &CreateArgs) -> Result<()> {
    let f = &args.vm;
    let boot_flags = f.kernel.is_some() || f.initrd.is_some() || f.cmdline.is_some();
    if boot_flags && def.image.is_some() {
        return Err(usage(
            "--kernel, --initrd and --cmdline do not apply to a VM made from an image (use --cmdline-append)",
        ));
    }
    if let Some(k) = &f.kernel {
        def.boot.kernel = Spanned::new(0..0, absolute(k, "kernel")?);
    }
    if let Some(i) = &f.initrd {
        def.boot.initrd = Some(Spanned::new(0..0, absolute(i, "initrd")?));
    }
    if let Some(c) = &f.cmdline {
        def.boot.cmdline = c.clone();
    }
    if let Some(m) = &f.memory {
        def.memory = Spanned::new(0..0, m.clone());
    }
    if let Some(c) = f.cpus {
        def.cpus = Spanned::new(0..0, i64::from(c));
    }
    if let Some(u) = &args.user_data {
        if def.image.is_none() {
            return Err(usage("--user-data is only for VMs made from an image"));
        }
        def.user_data = Some(Spanned::new(0..0, absolute(u, "user-data")?));
    }
    if let (Some(size), None) = (&f.disk_size, &def.image) {
        def.disks.push(Disk {
            path: Spanned::new(0..0, vm.path("disk.qcow2")),
            format: Some(Spanned::new(0..0, "qcow2".into())),
            readonly: false,
            id: None,
            size: Some(Spanned::new(0..0, size.clone())),
        });
    }
    let append = args.cmdline_append.trim();
    if !append.is_empty() {
        def.boot.cmdline = format!("{} {append}", def.boot.cmdline);
    }
    Ok(())
}

/// Create the disks of `def` that have a size and do not exist yet (sparse).
fn create_sized_disks(def: &VmDefinition) -> Result<()> {
    for d in &def.disks {
        let path = d.path.get_ref();
        if let (Some(size), false) = (&d.size, path.exists()) {
            let bytes = crate::size::parse_size(size.get_ref()).map_err(|e| anyhow!(e))?;
            let format = match &d.format {
                Some(f) => f
                    .get_ref()
                    .parse()
                    .map_err(|e: block::Error| anyhow!("{e}"))?,
                None => block::Format::Qcow2,
            };
            block::create(path, format, bytes, &block::CreateOptions::default())
                .with_context(|| format!("creating disk {}", path.display()))?;
        }
    }
    Ok(())
}
