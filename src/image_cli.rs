//! `vessel image import/build/ls/box/rm`: the image store (crates/images) from the command line.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;

use images::ImageStore;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import a disk image file (raw, qcow2, vdi, vhd, vmdk, vhdx) or a Vagrant box (.box,
    /// libvirt or vessel provider) into the image store; vessel finds the kernel, initrd and
    /// command line it boots (grub.cfg or /vmlinuz).
    Import {
        /// The disk image file (raw, qcow2, vdi, vhd, vmdk or vhdx) or Vagrant box (tar or
        /// tar.gz with box.img and metadata.json) holding a bootable system.
        path: PathBuf,
        /// Name in the store (default: the file name without its extension).
        #[arg(long)]
        name: Option<String>,
    },
    /// Build a Debian cloud image from Debian's own packages (mmdebstrap, from the host's
    /// apt sources; needs root): GPT + ext4 root, cloud-init, openssh-server, sudo.
    Build {
        /// Name in the store.
        name: String,
        /// Debian release: debian-12 (bookworm) or debian-13 (trixie).
        #[arg(long, default_value = "debian-12")]
        suite: String,
        /// Disk size with its unit, e.g. 2G.
        #[arg(long, default_value = "2G", value_parser = parse_image_size)]
        size: u64,
        /// More packages to install (repeatable).
        #[arg(long = "package")]
        packages: Vec<String>,
    },
    /// List images.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write a Vagrant box of an image (`vessel` provider: metadata.json + box.img, a
    /// compact qcow2 copy) for `vagrant box add` with the vagrant-vessel plugin, or for
    /// `vessel image import` on another machine.
    Box {
        /// The image.
        name: String,
        /// The box file to write (must not exist), e.g. debian-12.box.
        file: PathBuf,
    },
    /// Remove an image no VM uses.
    Rm {
        /// The image to remove.
        name: String,
    },
}

pub fn run(state_dir: Option<PathBuf>, cmd: ImageCommand) -> Result<i32> {
    let store = ImageStore::open(None)?;
    match cmd {
        ImageCommand::Import { path, name } => {
            let name = match name {
                Some(n) => n,
                None => default_name(&path)?,
            };
            let image = if images::looks_like_box(&path) {
                store.import_box(&path, &name, Box::new(crate::image_boot::extract))?
            } else {
                store.import(&path, &name, Box::new(crate::image_boot::extract))?
            };
            let b = image.manifest.boot.as_ref();
            println!(
                "imported {name}: {} {}, boots {} ({})",
                image.manifest.format,
                crate::size::human(image.manifest.virtual_size),
                b.map_or("?", |b| b.kernel.as_str()),
                b.map_or("?", |b| b.found_by.as_str()),
            );
        }
        ImageCommand::Build {
            name,
            suite,
            size,
            packages,
        } => build(&store, &name, &suite, size, packages)?,
        ImageCommand::Ls { json } => list(&store, json)?,
        ImageCommand::Box { name, file } => write_box(&store, &name, &file)?,
        ImageCommand::Rm { name } => {
            let image = store.get(&name)?;
            let users = crate::state::StateDir::new(state_dir)?.vms_using_image(&image.dir)?;
            store.remove(&name, users)?;
            println!("removed {name}");
        }
    }
    Ok(0)
}

/// The image's disk flattened into a qcow2 staged next to `file`, then packed into the box.
fn write_box(store: &ImageStore, name: &str, file: &Path) -> Result<()> {
    let image = store.get(name)?;
    if file.symlink_metadata().is_ok() {
        return Err(crate::exit::usage(format!(
            "{} exists already; vessel does not replace it",
            file.display()
        )));
    }
    let staged = file.with_file_name(format!(
        ".{}.box-img-{}",
        file.file_name()
            .map_or("box".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let opts = block::OpenOptions {
        read_only: true,
        format: Some(image.format()),
        allow_external_backing: false,
    };
    let packed = crate::disk_cli::convert::convert(
        &image.base_path(),
        &staged,
        block::Format::Qcow2,
        &opts,
        None,
    )
    .and_then(|size| Ok(images::pack_box(&staged, "qcow2", size, file)?));
    let _ = std::fs::remove_file(&staged);
    packed?;
    println!(
        "wrote {}: box of {name} (vessel provider; vagrant box add --name {name} {})",
        file.display(),
        file.display()
    );
    Ok(())
}

fn parse_image_size(s: &str) -> Result<u64, String> {
    crate::size::parse_size(s)
}

/// Build with debimage into the store's directory, then import the result (which finds
/// its kernel like any other image's) and record the packages.
fn build(
    store: &ImageStore,
    name: &str,
    suite: &str,
    size: u64,
    packages: Vec<String>,
) -> Result<()> {
    if store.get(name).is_ok() {
        anyhow::bail!(
            "an image named '{name}' exists already: remove it first (`vessel image rm`)"
        );
    }
    let mut opts = debimage::BuildOptions::new(suite);
    opts.size = size;
    opts.extra_packages = packages;
    let out = store
        .root
        .join(format!(".{name}.build-{}.raw", std::process::id()));
    let bar = indicatif::ProgressBar::new(debimage::Step::ALL.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:20}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(500));
    let built = debimage::build(&opts, &out, &mut |step| {
        bar.set_position(step.index() as u64);
        bar.set_message(step.name());
    });
    bar.finish_and_clear();
    let manifest = built.inspect_err(|_| {
        let _ = std::fs::remove_file(&out);
    })?;
    let imported = store.import(&out, name, Box::new(crate::image_boot::extract));
    let _ = std::fs::remove_file(&out);
    let mut image = imported?;
    let packages = manifest
        .packages
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect();
    store.set_provenance(
        &mut image,
        &format!("build:{} ({})", manifest.suite, manifest.mirror),
        packages,
    )?;
    println!(
        "built {name}: Debian {} with kernel {}, {} packages",
        manifest.suite,
        manifest.kernel_version,
        manifest.packages.len()
    );
    Ok(())
}

fn default_name(path: &Path) -> Result<String> {
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("the image path has no file name: give --name")?;
    let stem = stem.split('.').next().unwrap_or(stem);
    Ok(stem.to_string())
}

fn list(store: &ImageStore, json: bool) -> Result<()> {
    let images = store.list()?;
    if json {
        let rows: Vec<_> = images
            .iter()
            .filter_map(|i| i.as_ref().ok())
            .map(|i| serde_json::to_value(&i.manifest).unwrap_or_default())
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["NAME", "FORMAT", "SIZE", "BOOTS", "SOURCE"]);
    for image in images {
        match image {
            Ok(i) => {
                let m = &i.manifest;
                table.add_row([
                    m.name.clone(),
                    m.format.clone(),
                    crate::size::human(m.virtual_size),
                    m.boot.as_ref().map_or("-".into(), |b| b.kernel.clone()),
                    m.source.clone(),
                ]);
            }
            Err(e) => eprintln!("vessel: warning: {e}"),
        }
    }
    println!("{table}");
    Ok(())
}
