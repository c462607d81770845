//! The build itself: options, progress steps, and the sequence mmdebstrap → configure →
//! mkfs.ext4 → partition → checksum that turns Debian's packages into a disk image.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::disk::{self, Layout};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{self, Manifest};
use crate::mmdebstrap::{self, Bootstrap};
use crate::sources::{self, Mirrors};
use crate::suite::Suite;
use crate::tools::{self, DPKG_QUERY};
use crate::workdir::WorkDir;

/// The default disk size: 2 GiB.
pub const DEFAULT_SIZE: u64 = 2 << 30;

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Image name or codename: `debian-12`, `bookworm`.
    pub suite: String,
    /// The Debian archive; by default the one of the host's apt sources.
    pub mirror: Option<String>,
    /// The security archive; by default the host's, unless `mirror` is given.
    pub security_mirror: Option<String>,
    /// Disk size in bytes (rounded up to MiB).
    pub size: u64,
    /// Packages installed besides [`mmdebstrap::PACKAGES`].
    pub extra_packages: Vec<String>,
    /// Where the scratch directory (about 500 MiB) is made; it is removed afterwards. By
    /// default `/dev/shm` when it has room, else the temporary directory.
    pub work_dir: PathBuf,
    /// Root directory whose `etc/apt` sources give the mirror (`/`: the host's).
    pub apt_root: PathBuf,
    /// File-system UUID; random when `None`.
    pub fs_uuid: Option<String>,
    /// Partition GUID; random when `None`.
    pub partition_uuid: Option<String>,
    /// Disk GUID; random when `None`.
    pub disk_guid: Option<String>,
    /// Pin timestamps; by default taken from the SOURCE_DATE_EPOCH environment variable.
    pub source_date_epoch: Option<u64>,
}

impl BuildOptions {
    /// Options for `suite` with the defaults: host mirror, 2 GiB, random UUIDs.
    pub fn new(suite: &str) -> BuildOptions {
        BuildOptions {
            suite: suite.to_string(),
            mirror: None,
            security_mirror: None,
            size: DEFAULT_SIZE,
            extra_packages: Vec::new(),
            work_dir: crate::workdir::default_parent(),
            apt_root: PathBuf::from("/"),
            fs_uuid: None,
            partition_uuid: None,
            disk_guid: None,
            source_date_epoch: std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|v| v.trim().parse().ok()),
        }
    }

    /// The archives to use: the given mirror, else the host's apt sources.
    pub fn mirrors(&self, codename: &str) -> Result<Mirrors> {
        match &self.mirror {
            Some(archive) => Ok(Mirrors {
                archive: archive.trim_end_matches('/').to_string(),
                security: self.security_mirror.clone(),
            }),
            None => {
                let mut found = sources::host_mirrors(&self.apt_root, codename)?;
                if self.security_mirror.is_some() {
                    found.security.clone_from(&self.security_mirror);
                }
                Ok(found)
            }
        }
    }
}

/// The steps of a build, in order; the progress callback gets each as it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Installing the packages into a directory.
    Mmdebstrap,
    /// Writing fstab, cloud-init settings and the like.
    Configure,
    /// Making the ext4 file system from the directory.
    Mkfs,
    /// Writing the GPT.
    Partition,
    /// Hashing the image and listing its packages.
    Checksum,
}

impl Step {
    /// Every step in build order.
    pub const ALL: [Step; 5] = [
        Step::Mmdebstrap,
        Step::Configure,
        Step::Mkfs,
        Step::Partition,
        Step::Checksum,
    ];

    /// The step's position in [`Step::ALL`].
    pub fn index(self) -> usize {
        Step::ALL.iter().position(|&s| s == self).unwrap_or(0)
    }

    /// The step's short name, as shown in progress bars.
    pub fn name(self) -> &'static str {
        match self {
            Step::Mmdebstrap => "mmdebstrap",
            Step::Configure => "configure",
            Step::Mkfs => "mkfs.ext4",
            Step::Partition => "partition",
            Step::Checksum => "checksum",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Check, before any work, that every tool is installed and the build can run as root.
pub fn preflight() -> Result<()> {
    tools::check_all()?;
    if effective_uid()? != 0 {
        return Err(Error::NotRoot);
    }
    Ok(())
}

/// The effective user id, from the second field of `Uid:` in /proc/self/status.
fn effective_uid() -> Result<u32> {
    const STATUS: &str = "/proc/self/status";
    let status = std::fs::read_to_string(STATUS).at(STATUS)?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| Error::Incomplete(format!("{STATUS} has no Uid line")))
}

/// Build the image described by `opts` into the raw disk file `out`, calling `progress` as
/// each [`Step`] starts. On failure nothing is left at `out` and the scratch directory is gone.
pub fn build(opts: &BuildOptions, out: &Path, progress: &mut dyn FnMut(Step)) -> Result<Manifest> {
    let suite = Suite::from_name(&opts.suite)?;
    let layout = Layout::new(opts.size)?;
    let mirrors = opts.mirrors(suite.codename)?;
    let ids = Ids::new(opts)?;
    preflight()?;
    let work = WorkDir::create(&opts.work_dir)?;
    let partial = partial_path(out);
    let result = build_in(
        opts, suite, &mirrors, &layout, &ids, &work, &partial, progress,
    );
    match result {
        Ok(manifest) => {
            std::fs::rename(&partial, out).at(out)?;
            Ok(manifest)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// The UUIDs of one build.
struct Ids {
    fs: String,
    partition: String,
    disk: String,
}

impl Ids {
    fn new(opts: &BuildOptions) -> Result<Ids> {
        use crate::ids::given_or_random;
        Ok(Ids {
            fs: given_or_random(opts.fs_uuid.as_deref(), "file-system UUID")?,
            partition: given_or_random(opts.partition_uuid.as_deref(), "partition UUID")?,
            disk: given_or_random(opts.disk_guid.as_deref(), "disk GUID")?,
        })
    }
}

/// `out` with `.partial` appended: the image is written there and renamed when complete.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

#[allow(clippy::too_many_arguments)]
fn build_in(
    opts: &BuildOptions,
    suite: Suite,
    mirrors: &Mirrors,
    layout: &Layout,
    ids: &Ids,
    work: &WorkDir,
    disk_path: &Path,
    progress: &mut dyn FnMut(Step),
) -> Result<Manifest> {
    let overlay = work.path().join("overlay");
    let root = work.path().join("root");
    progress(Step::Mmdebstrap);
    mmdebstrap::write_overlay(&overlay)?;
    let bootstrap = Bootstrap {
        codename: suite.codename,
        mirrors,
        extra_packages: &opts.extra_packages,
        overlay: &overlay,
        target: &root,
    };
    mmdebstrap::run(&bootstrap, opts.source_date_epoch)?;
    progress(Step::Configure);
    let configured = crate::configure::configure(&root, &ids.fs)?;
    let packages = installed_packages(&root)?;
    progress(Step::Mkfs);
    disk::create_sparse(disk_path, layout)?;
    disk::mkfs(disk_path, layout, &root, &ids.fs, opts.source_date_epoch)?;
    progress(Step::Partition);
    disk::partition(disk_path, layout, &ids.disk, &ids.partition)?;
    progress(Step::Checksum);
    let sha256 = disk::sha256(disk_path)?;
    let build_epoch = opts.source_date_epoch.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    Ok(Manifest {
        image: suite.image_name.to_string(),
        suite: suite.codename.to_string(),
        mirror: mirrors.archive.clone(),
        security_mirror: mirrors.security.clone(),
        kernel_cmdline: format!("root=UUID={} ro console=ttyS0", ids.fs),
        kernel_version: configured.kernel_version,
        fs_uuid: ids.fs.clone(),
        partition_uuid: ids.partition.clone(),
        disk_guid: ids.disk.clone(),
        disk_size: layout.disk_size,
        partition_offset: layout.partition_offset(),
        partition_size: layout.partition_size(),
        sha256,
        build_date: manifest::rfc3339_utc(build_epoch),
        source_date_epoch: opts.source_date_epoch,
        packages,
    })
}

/// The packages installed in the tree at `root`, read from its dpkg database.
fn installed_packages(root: &Path) -> Result<Vec<manifest::Package>> {
    let mut cmd = DPKG_QUERY.command()?;
    cmd.arg(format!(
        "--admindir={}",
        root.join("var/lib/dpkg").display()
    ))
    .arg("-W")
    .arg(format!("-f={}", manifest::DPKG_QUERY_FORMAT));
    let out = tools::run(DPKG_QUERY, &mut cmd)?;
    let packages = manifest::parse_dpkg_query(&String::from_utf8_lossy(&out.stdout));
    if packages.is_empty() {
        return Err(Error::Incomplete("dpkg lists no installed package".into()));
    }
    Ok(packages)
}

#[cfg(test)]
mod tests;
