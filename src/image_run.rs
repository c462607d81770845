//! `vessel run --image NAME|PATH`: boot an image's own kernel with a throw-away overlay.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use images::ImageStore;

/// A run directory removed when the run ends: the overlay and, for an image given as a
/// path, the kernel and initrd extracted from it.
pub struct ImageRun {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub overlay: PathBuf,
}

impl Drop for ImageRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Prepare a run of `spec`: an image in the store by that name, else an image file.
pub fn prepare(spec: &str, disk_size: Option<u64>, cmdline_append: &str) -> Result<ImageRun> {
    let store = ImageStore::open(None)?;
    let dir = std::env::temp_dir().join(format!("vessel-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut run = ImageRun {
        dir: dir.clone(),
        kernel: PathBuf::new(),
        initrd: None,
        cmdline: String::new(),
        overlay: dir.join("disk.qcow2"),
    };
    let (kernel, initrd, cmdline) = match store.get(spec) {
        Ok(image) => {
            let Some((kernel, initrd, cmdline)) = image.boot_files() else {
                bail!("image {spec} has no kernel vessel can boot directly");
            };
            let cmdline = cmdline.to_string();
            image.create_overlay(&run.overlay, disk_size)?;
            (kernel, initrd, cmdline)
        }
        Err(images::StoreError::NotFound(_) | images::StoreError::InvalidName(_))
            if Path::new(spec).exists() =>
        {
            ad_hoc_image(Path::new(spec), &run, disk_size)?
        }
        Err(images::StoreError::NotFound(_) | images::StoreError::InvalidName(_)) => {
            bail!("--image {spec}: no image of that name in the store (`vessel image ls`) and no such file")
        }
        Err(e) => return Err(e.into()),
    };
    let nested = crate::image_boot::kvm_is_pvm();
    if nested {
        eprintln!("{}", crate::image_boot::NESTED_NOTICE);
    }
    run.cmdline = crate::image_boot::vm_cmdline(&cmdline, nested, cmdline_append);
    run.kernel = crate::image_boot::kernel_for_host(&kernel, nested);
    run.initrd = initrd.map(|i| crate::image_boot::initrd_for_host(&i, nested));
    Ok(run)
}

/// An image file not in the store, checked as `import` checks it: its kernel and initrd
/// go into the run directory, and the overlay is backed by the file itself.
fn ad_hoc_image(
    path: &Path,
    run: &ImageRun,
    disk_size: Option<u64>,
) -> Result<(PathBuf, Option<PathBuf>, String)> {
    let (format, size) = images::check_importable(path)?;
    let boot = crate::image_boot::extract(path, format, &run.dir).map_err(|reason| {
        anyhow::anyhow!(
            "{}: cannot boot this image directly: {reason}",
            path.display()
        )
    })?;
    images::create_overlay(path, format, &run.overlay, disk_size.unwrap_or(0).max(size))?;
    Ok((
        run.dir.join(&boot.kernel),
        boot.initrd.map(|i| run.dir.join(i)),
        boot.cmdline,
    ))
}
