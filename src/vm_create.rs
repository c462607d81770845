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
use crate::vmdef::{Disk, Nic, VmDefinition};

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
#[derive(Debug, Clone, Args)]
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
    /// A virtio-blk disk: path=IMG[,readonly=on][,id=NAME][,format=FMT] or IMG, as
    /// `vessel run --disk`; added after the VM's disks (repeatable).
    #[arg(long = "disk", value_name = "SPEC", value_parser = crate::run_cli::parse_disk)]
    disks: Vec<vmm::DiskConfig>,
    /// A virtio-net interface, as `vessel run --nic`: MODE[,mac=…][,forward=…]
    /// [,host-loopback=on|off]; MODE is nat, natnet:NAME, internal:NAME, hostonly:NAME,
    /// bridged:IFACE or tap:NAME. Given once or more, these replace the VM's NICs.
    #[arg(long = "nic", value_name = "SPEC", value_parser = Nic::from_spec)]
    nics: Vec<Nic>,
    /// A port forward added to the VM's first nat/natnet NIC:
    /// tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT, e.g. tcp::2222-:22 (repeatable).
    #[arg(long = "forward", value_name = "SPEC", value_parser = checked_forward)]
    forwards: Vec<String>,
    /// A virtio-rng device fed from the host's getrandom (--rng, or --rng off to remove it).
    #[arg(long, value_name = "on|off", num_args = 0..=1, default_missing_value = "on", value_parser = on_off)]
    rng: Option<bool>,
    /// KVM's in-kernel PIT: auto (multiboot kernels only), on or off.
    #[arg(long, value_parser = checked_pit)]
    pit: Option<String>,
}

fn checked_forward(s: &str) -> Result<String, String> {
    net::config::parse_forward(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn checked_pit(s: &str) -> Result<String, String> {
    crate::vmdef::parse_pit(s).map(|_| s.to_string())
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("invalid value '{s}': on or off")),
    }
}

/// A memory size as written, once it is known to be valid.
fn checked_memory(s: &str) -> Result<String, String> {
    crate::run_cli::parse_memory(s).map(|_| s.to_string())
}

/// A size as written, once it is known to be valid.
fn checked_size(s: &str) -> Result<String, String> {
    crate::size::parse_size(s).map(|_| s.to_string())
}

/// Make the VM's directory, definition and disks; nothing is left when it fails.
fn make(state: &StateDir, args: &CreateArgs) -> Result<()> {
    let vm = state.vm(&args.name).map_err(|e| usage(e.to_string()))?;
    if vm.exists() {
        return Err(usage(format!("a VM named '{}' already exists", args.name)));
    }
    let mut def = match &args.from {
        Some(file) => from_file(file, args)?,
        None => from_flags(&vm, args)?,
    };
    apply_flags(&mut def, &vm, args)?;
    let mut def = recheck(&def, &vm)?;
    // Make the VM's files; nothing is left of a VM whose creation failed.
    let made = (|| -> Result<()> {
        let disk_size = match &args.vm.disk_size {
            Some(s) if def.image.is_some() => {
                Some(crate::size::parse_size(s).map_err(|e| anyhow!(e))?)
            }
            _ => None,
        };
        let had_nics = !def.nics.is_empty();
        crate::image_vm::provision(&vm, &mut def, disk_size)?;
        if def.image.is_some() && !had_nics {
            args.vm.add_forwards(&mut def)?;
        }
        state::ensure_dir(&vm.dir)?;
        create_sized_disks(&def)?;
        std::fs::write(vm.path(state::DEFINITION), toml::to_string_pretty(&def)?)?;
        // Detected once, here: later starts never probe what the guest may have written.
        crate::disk_formats::record(&vm.path(state::DEFINITION))?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&vm.dir);
        return Err(e);
    }
    crate::project_cli::register_state_dir(state)
}

/// `vessel up`: create VM `name` from a definition file, as `create NAME --from FILE`.
pub fn create_from_file(state: &StateDir, name: &str, file: &Path) -> Result<()> {
    make(state, &CreateArgs::from_file(name, file))
}

impl CreateArgs {
    /// `create NAME --from FILE` with no other flag.
    fn from_file(name: &str, file: &Path) -> Self {
        CreateArgs {
            name: name.to_string(),
            from: Some(file.to_path_buf()),
            image: None,
            user_data: None,
            cmdline_append: String::new(),
            vm: VmFlags::none(),
            json: false,
        }
    }
}

pub fn create(state: &StateDir, args: CreateArgs) -> Result<i32> {
    make(state, &args)?;
    let vm = state.vm(&args.name)?;
    if args.json {
        crate::vm_list::print_summary(&vm)?;
    } else {
        println!("created VM '{}' in {}", args.name, vm.dir.display());
    }
    Ok(0)
}

/// `vessel reload`: a definition file read and checked as `create --from` reads it.
pub fn definition_from_file(file: &Path, name: &str) -> Result<VmDefinition> {
    from_file(file, &CreateArgs::from_file(name, file))
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
    let def = VmDefinition::parse(&vm.path(state::DEFINITION), &t).map_err(|e| {
        let messages: Vec<String> = e.errors.into_iter().map(|e| e.message).collect();
        usage(messages.join("; "))
    })?;
    Ok(def)
}

/// Check a definition the flags changed as a whole, as `vm.toml` would be read back. The
/// text is vessel's: errors carry no line.
pub fn recheck(def: &VmDefinition, vm: &VmDir) -> Result<VmDefinition> {
    let text = toml::to_string_pretty(def)?;
    VmDefinition::parse(&vm.path(state::DEFINITION), &text).map_err(|e| {
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

/// Put the create-only flags into `def`, then the VM flags.
fn apply_flags(def: &mut VmDefinition, vm: &VmDir, args: &CreateArgs) -> Result<()> {
    if let Some(u) = &args.user_data {
        if def.image.is_none() {
            return Err(usage("--user-data is only for VMs made from an image"));
        }
        def.user_data = Some(Spanned::new(0..0, absolute(u, "user-data")?));
    }
    args.vm.apply(def, vm)?;
    let append = args.cmdline_append.trim();
    if !append.is_empty() {
        def.boot.cmdline = format!("{} {append}", def.boot.cmdline);
    }
    Ok(())
}

impl VmFlags {
    /// No flag given.
    fn none() -> Self {
        VmFlags {
            kernel: None,
            initrd: None,
            cmdline: None,
            memory: None,
            cpus: None,
            disk_size: None,
            disks: Vec::new(),
            nics: Vec::new(),
            forwards: Vec::new(),
            rng: None,
            pit: None,
        }
    }

    /// Whether any flag was given.
    pub fn changes_something(&self) -> bool {
        self.kernel.is_some()
            || self.initrd.is_some()
            || self.cmdline.is_some()
            || self.memory.is_some()
            || self.cpus.is_some()
            || self.disk_size.is_some()
            || !self.disks.is_empty()
            || !self.nics.is_empty()
            || !self.forwards.is_empty()
            || self.rng.is_some()
            || self.pit.is_some()
    }

    /// Whether a flag other than `--forward` was given (a running VM refuses them).
    pub fn changes_more_than_forwards(&self) -> bool {
        let forwards_only = VmFlags {
            forwards: Vec::new(),
            ..self.clone()
        };
        forwards_only.changes_something()
    }

    /// The `--forward` values, as given.
    pub fn forward_specs(&self) -> &[String] {
        &self.forwards
    }

    /// Put the flags into `def`, over what it said (create --from, set).
    pub fn apply(&self, def: &mut VmDefinition, vm: &VmDir) -> Result<()> {
        let f = self;
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
        if let Some(size) = &f.disk_size {
            self.add_sized_disk(def, vm, size)?;
        }
        for d in &f.disks {
            def.disks.push(Disk {
                path: Spanned::new(0..0, absolute(&d.path, "disk")?),
                format: d.format.map(|f| Spanned::new(0..0, f.to_string())),
                readonly: d.read_only,
                id: d.id.clone().map(|i| Spanned::new(0..0, i)),
                size: None,
                allow_external_backing: d.allow_external_backing,
                rate: rate_text(d.rate_limit.bandwidth),
                iops: rate_text(d.rate_limit.ops),
            });
        }
        if !f.nics.is_empty() {
            def.nics = f.nics.clone();
        }
        if let Some(on) = f.rng {
            def.rng = on;
        }
        if let Some(p) = &f.pit {
            def.pit = Some(Spanned::new(0..0, p.clone()));
        }
        // An image VM without NICs gets its NAT NIC when it is provisioned: forwards wait.
        if def.image.is_none() || !def.nics.is_empty() {
            self.add_forwards(def)?;
        }
        Ok(())
    }

    /// `--disk-size`: the overlay's size for an image VM (used at provisioning), else a new
    /// `disk.qcow2`.
    fn add_sized_disk(&self, def: &mut VmDefinition, vm: &VmDir, size: &str) -> Result<()> {
        if def.image.is_some() {
            return Ok(());
        }
        let path = vm.path("disk.qcow2");
        if path.exists() || def.disks.iter().any(|d| d.path.get_ref() == &path) {
            return Err(usage(format!(
                "VM '{}' already has {}: add other disks with --disk",
                vm.name,
                path.display()
            )));
        }
        def.disks.push(Disk {
            path: Spanned::new(0..0, path),
            format: Some(Spanned::new(0..0, "qcow2".into())),
            readonly: false,
            id: None,
            size: Some(Spanned::new(0..0, size.to_string())),
            allow_external_backing: false,
            rate: None,
            iops: None,
        });
        Ok(())
    }

    /// `--forward`: onto the first nat/natnet NIC.
    pub fn add_forwards(&self, def: &mut VmDefinition) -> Result<()> {
        if self.forwards.is_empty() {
            return Ok(());
        }
        let nic =
            def.nics.iter_mut().find(|n| n.is_nat()).ok_or_else(|| {
                usage("--forward needs a nat or natnet NIC (add one with --nic nat)")
            })?;
        for f in &self.forwards {
            nic.forward.push(Spanned::new(0..0, f.clone()));
        }
        Ok(())
    }
}

/// Create the disks of `def` that have a size and do not exist yet (sparse).
pub fn create_sized_disks(def: &VmDefinition) -> Result<()> {
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

/// A `--disk` rate as vm.toml spells it: the per-second figure it was parsed from.
fn rate_text(bucket: Option<virtio::rate_limiter::BucketConfig>) -> Option<Spanned<String>> {
    bucket.map(|b| {
        let per_second = virtio::rate_limiter::bucket_rate_per_second(&b);
        Spanned::new(0..0, per_second.to_string())
    })
}
