//! Writing found boot files into a directory (a cache next to the image, say): `vmlinuz`,
//! `initrd.img` and `cmdline`, each written to a temporary name and renamed into place.

use std::path::{Path, PathBuf};

use crate::boot::{find_boot, BootFiles, BootSource, PartitionInfo};

/// Errors of [`extract`] and [`write_boot_files`].
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("cannot open disk image {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: block::Error,
    },
    #[error("{path}: {source}")]
    Find {
        path: PathBuf,
        #[source]
        source: crate::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where [`write_boot_files`] put things, and what they are.
#[derive(Debug, Clone)]
pub struct Extracted {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub source: BootSource,
    pub root_partition: PartitionInfo,
}

/// Open `image` read-only, find its boot files and write them into `dir` (created if
/// missing).
pub fn extract(image: &Path, dir: &Path) -> Result<Extracted, ExtractError> {
    let opts = block::OpenOptions {
        read_only: true,
        ..Default::default()
    };
    let mut disk = block::open(image, &opts).map_err(|source| ExtractError::Open {
        path: image.to_path_buf(),
        source,
    })?;
    let boot = find_boot(&mut disk).map_err(|source| ExtractError::Find {
        path: image.to_path_buf(),
        source,
    })?;
    write_boot_files(&boot, dir)
}

/// Write `boot` as `dir/vmlinuz`, `dir/initrd.img` (removed when there is no initrd) and
/// `dir/cmdline`.
pub fn write_boot_files(boot: &BootFiles, dir: &Path) -> Result<Extracted, ExtractError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExtractError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let kernel = dir.join("vmlinuz");
    write_atomic(&kernel, &boot.kernel).map_err(write_err(&kernel))?;
    let initrd_path = dir.join("initrd.img");
    let initrd = match &boot.initrd {
        Some(data) => {
            write_atomic(&initrd_path, data).map_err(write_err(&initrd_path))?;
            Some(initrd_path)
        }
        None => {
            match std::fs::remove_file(&initrd_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(write_err(&initrd_path)(e))
                }
                _ => {}
            }
            None
        }
    };
    let cmdline = dir.join("cmdline");
    write_atomic(&cmdline, format!("{}\n", boot.cmdline).as_bytes())
        .map_err(write_err(&cmdline))?;
    Ok(Extracted {
        kernel,
        initrd,
        cmdline: boot.cmdline.clone(),
        source: boot.source.clone(),
        root_partition: boot.root_partition.clone(),
    })
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
