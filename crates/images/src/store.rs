//! The store directory: `import`, `list`, `get`, `remove`, and overlays for VMs.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::copy::sparse_copy_hashed;
use crate::manifest::{BootInfo, Manifest, MANIFEST_VERSION};
use crate::names::valid_name;

const MANIFEST: &str = "manifest.toml";
/// Directory of an image holding the kernel and initrd extracted from it.
pub const BOOT_DIR: &str = "boot";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("neither XDG_DATA_HOME nor HOME is set: cannot locate the image store")]
    NoHome,
    #[error("invalid image name '{0}': use letters, digits, '-', '_' or '.', starting with a letter or digit (at most 63)")]
    InvalidName(String),
    #[error("no image named '{0}' (see `vessel image ls`)")]
    NotFound(String),
    #[error("an image named '{0}' exists already: remove it first (`vessel image rm`) or choose another --name")]
    Exists(String),
    #[error("image '{name}' is in use by VM(s) {}: remove them first", .vms.join(", "))]
    InUse { name: String, vms: Vec<String> },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("{path}: {source}")]
    Disk { path: PathBuf, source: block::Error },
    #[error(
        "{0} has a backing file; flatten it first (`vessel disk convert`) and import the result"
    )]
    HasBacking(PathBuf),
    #[error("{0} is a VMDK descriptor with separate extent files; convert it to one file first (`vessel disk convert`)")]
    SplitVmdk(PathBuf),
    #[error("{path}: cannot boot this image directly: {reason}")]
    NotBootable { path: PathBuf, reason: String },
    #[error("{path}: bad manifest: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error(transparent)]
    Box(#[from] crate::vagrant_box::BoxError),
    #[error("{path}: metadata.json says box.img is {named}, but it is {format}")]
    BoxFormatMismatch {
        path: PathBuf,
        named: String,
        format: block::Format,
    },
    #[error("{path}: box.img is {format}, but a libvirt box holds qcow2")]
    BoxNotQcow2 {
        path: PathBuf,
        format: block::Format,
    },
}

type Result<T> = std::result::Result<T, StoreError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The image store directory.
pub struct ImageStore {
    pub root: PathBuf,
}

/// One image in the store.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// What `import` calls to find the image's own kernel, initrd and command line: it gets
/// the base image, its format and an empty directory to extract the files into.
pub type BootFinder<'a> =
    dyn FnOnce(&Path, block::Format, &Path) -> std::result::Result<BootInfo, String> + 'a;

impl ImageStore {
    /// `explicit`, else `$XDG_DATA_HOME/vessel/images`, else `~/.local/share/vessel/images`.
    pub fn open(explicit: Option<PathBuf>) -> Result<Self> {
        let root = match explicit {
            Some(p) => p,
            None => match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
                Some(x) => PathBuf::from(x).join("vessel/images"),
                None => PathBuf::from(std::env::var_os("HOME").ok_or(StoreError::NoHome)?)
                    .join(".local/share/vessel/images"),
            },
        };
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        Ok(Self { root })
    }

    fn dir_of(&self, name: &str) -> Result<PathBuf> {
        if !valid_name(name) {
            return Err(StoreError::InvalidName(name.into()));
        }
        Ok(self.root.join(name))
    }

    /// The image called `name`.
    pub fn get(&self, name: &str) -> Result<Image> {
        let dir = self.dir_of(name)?;
        let path = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(name.into()))
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let manifest =
            Manifest::parse(&text).map_err(|reason| StoreError::BadManifest { path, reason })?;
        Ok(Image { dir, manifest })
    }

    /// All images, sorted by name; unreadable ones are reported as errors in place.
    pub fn list(&self) -> Result<Vec<std::result::Result<Image, StoreError>>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io(&self.root))? {
            let name = entry.map_err(io(&self.root))?.file_name();
            let name = name.to_string_lossy();
            if valid_name(&name) && self.root.join(&*name).join(MANIFEST).exists() {
                names.push(name.into_owned());
            }
        }
        names.sort();
        Ok(names.iter().map(|n| self.get(n)).collect())
    }

    /// Copy `src` into the store as `name` and find what it boots. Nothing is left behind
    /// when any step fails.
    pub fn import(&self, src: &Path, name: &str, find_boot: Box<BootFinder<'_>>) -> Result<Image> {
        let dest = self.dir_of(name)?;
        if dest.exists() {
            return Err(StoreError::Exists(name.into()));
        }
        let (format, _) = check_importable(src)?;
        let tmp = self
            .root
            .join(format!(".{name}.importing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let result = self.import_into(&tmp, src, name, format, find_boot);
        let done = result.and_then(|manifest| {
            std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
            Ok(Image {
                dir: dest,
                manifest,
            })
        });
        if done.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        done
    }

    /// Import a Vagrant box (libvirt or vessel; see [`crate::unpack_box`]): its `box.img`
    /// becomes the base image, recorded as coming from `src`. Nothing is left behind on failure.
    pub fn import_box(
        &self,
        src: &Path,
        name: &str,
        find_boot: Box<BootFinder<'_>>,
    ) -> Result<Image> {
        let dest = self.dir_of(name)?;
        if dest.exists() {
            return Err(StoreError::Exists(name.into()));
        }
        let unpack = self
            .root
            .join(format!(".{name}.box-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&unpack);
        std::fs::create_dir_all(&unpack).map_err(io(&unpack))?;
        let result = (|| {
            let (disk, meta) = crate::vagrant_box::unpack_box(src, &unpack)?;
            let (format, _) = check_importable(&disk)?;
            let vessel_box = meta.provider.as_deref() == Some(crate::vagrant_box::VESSEL_PROVIDER);
            if !vessel_box && format != block::Format::Qcow2 {
                return Err(StoreError::BoxNotQcow2 {
                    path: src.to_path_buf(),
                    format,
                });
            }
            let named = meta.format.as_deref().unwrap_or(format.name());
            if named != format.name() {
                return Err(StoreError::BoxFormatMismatch {
                    path: src.to_path_buf(),
                    named: named.into(),
                    format,
                });
            }
            let mut image = self.import(&disk, name, find_boot)?;
            self.set_provenance(&mut image, &src.display().to_string(), Vec::new())?;
            Ok(image)
        })();
        let _ = std::fs::remove_dir_all(&unpack);
        result
    }

    fn import_into(
        &self,
        tmp: &Path,
        src: &Path,
        name: &str,
        format: block::Format,
        find_boot: Box<BootFinder<'_>>,
    ) -> Result<Manifest> {
        std::fs::create_dir_all(tmp.join(BOOT_DIR)).map_err(io(tmp))?;
        let file = format!("base.{}", format.name());
        let base = tmp.join(&file);
        let mut from = File::open(src).map_err(io(src))?;
        let mut to = File::create(&base).map_err(io(&base))?;
        let (sha256, _) = sparse_copy_hashed(&mut from, &mut to).map_err(io(&base))?;
        to.sync_all().map_err(io(&base))?;
        let virtual_size = open_read_only(&base, format)?.size();
        let boot = find_boot(&base, format, &tmp.join(BOOT_DIR)).map_err(|reason| {
            StoreError::NotBootable {
                path: src.to_path_buf(),
                reason,
            }
        })?;
        make_read_only(&base)?;
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            name: name.into(),
            source: src.display().to_string(),
            file,
            format: format.name().into(),
            sha256,
            virtual_size,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            boot: Some(boot),
            packages: Vec::new(),
        };
        let path = tmp.join(MANIFEST);
        std::fs::write(&path, manifest.to_toml()).map_err(io(&path))?;
        Ok(manifest)
    }

    /// Record where a built image came from and what went in (`name=version` each).
    pub fn set_provenance(
        &self,
        image: &mut Image,
        source: &str,
        packages: Vec<String>,
    ) -> Result<()> {
        image.manifest.source = source.into();
        image.manifest.packages = packages;
        let path = image.dir.join(MANIFEST);
        let tmp = image.dir.join(".manifest.toml.new");
        std::fs::write(&tmp, image.manifest.to_toml()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Remove `name`, unless a VM in `users` (the VMs whose definitions name it) needs it.
    pub fn remove(&self, name: &str, users: Vec<String>) -> Result<()> {
        let image = self.get(name)?;
        if !users.is_empty() {
            return Err(StoreError::InUse {
                name: name.into(),
                vms: users,
            });
        }
        let trash = self
            .root
            .join(format!(".{name}.removing-{}", std::process::id()));
        std::fs::rename(&image.dir, &trash).map_err(io(&image.dir))?;
        std::fs::remove_dir_all(&trash).map_err(io(&trash))
    }
}

impl Image {
    pub fn format(&self) -> block::Format {
        // Checked by Manifest::parse.
        self.manifest.format.parse().unwrap_or(block::Format::Raw)
    }

    pub fn base_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.file)
    }

    /// Kernel and initrd extracted at import.
    pub fn boot_files(&self) -> Option<(PathBuf, Option<PathBuf>, &str)> {
        let b = self.manifest.boot.as_ref()?;
        let boot = self.dir.join(BOOT_DIR);
        Some((
            boot.join(&b.kernel),
            b.initrd.as_ref().map(|i| boot.join(i)),
            &b.cmdline,
        ))
    }

    /// Create a qcow2 overlay at `path` backed by this image (never written through it),
    /// with a virtual size of `size` or the base's, whichever is larger. Returns the size.
    pub fn create_overlay(&self, path: &Path, size: Option<u64>) -> Result<u64> {
        let size = size.unwrap_or(0).max(self.manifest.virtual_size);
        create_overlay(&self.base_path(), self.format(), path, size)
    }
}

/// Create a qcow2 image at `path` of `size` bytes backed by `base` (by its canonical path).
pub fn create_overlay(base: &Path, format: block::Format, path: &Path, size: u64) -> Result<u64> {
    let base = std::fs::canonicalize(base).map_err(io(base))?;
    let opts = block::CreateOptions {
        backing: Some((base, Some(format))),
        ..Default::default()
    };
    block::create(path, block::Format::Qcow2, size, &opts).map_err(|source| StoreError::Disk {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(size)
}

/// A regular file, readable as a disk image of one file with no backing chain: its format
/// and virtual size.
pub fn check_importable(src: &Path) -> Result<(block::Format, u64)> {
    let meta = std::fs::metadata(src).map_err(io(src))?;
    if !meta.is_file() {
        return Err(StoreError::NotAFile(src.to_path_buf()));
    }
    let disk = |source| StoreError::Disk {
        path: src.to_path_buf(),
        source,
    };
    let format = block::detect(src).map_err(disk)?;
    if format == block::Format::Vmdk {
        let mut magic = [0u8; 4];
        std::io::Read::read_exact(&mut File::open(src).map_err(io(src))?, &mut magic)
            .map_err(io(src))?;
        if &magic != b"KDMV" {
            return Err(StoreError::SplitVmdk(src.to_path_buf()));
        }
    }
    let image = open_read_only(src, format)?;
    if image.backing().is_some() {
        return Err(StoreError::HasBacking(src.to_path_buf()));
    }
    Ok((format, image.size()))
}

fn open_read_only(path: &Path, format: block::Format) -> Result<Box<dyn block::DiskImage>> {
    let opts = block::OpenOptions {
        read_only: true,
        format: Some(format),
        allow_external_backing: false,
    };
    block::open(path, &opts).map_err(|source| StoreError::Disk {
        path: path.to_path_buf(),
        source,
    })
}

fn make_read_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).map_err(io(path))
}
