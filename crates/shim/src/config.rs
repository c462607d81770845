//! The shim's own configuration: where vessel, the guest kernel, the base initramfs and
//! vessel-agent are, and the VM's size. A TOML file, `/etc/vessel/containerd-shim.toml`,
//! or the file `$VESSEL_SHIM_CONFIG` names (containerd passes its environment to shims).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the configuration is when `$VESSEL_SHIM_CONFIG` is not set.
pub const DEFAULT_PATH: &str = "/etc/vessel/containerd-shim.toml";
/// The environment variable that names another configuration file.
pub const ENV: &str = "VESSEL_SHIM_CONFIG";

/// The kernel command line on hosts whose `/dev/kvm` is kvm_pvm (docs/nested-kvm.md).
const NESTED_CMDLINE: &str = include_str!("../../../scripts/nested-host.cmdline");
/// The kernel command line elsewhere.
const CMDLINE: &str = "console=ttyS0 panic=-1 quiet";

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read the shim configuration {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("the shim configuration {0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error("the shim configuration {path}: {what} {file} does not exist")]
    Missing {
        path: PathBuf,
        what: &'static str,
        file: PathBuf,
    },
    #[error("the shim configuration {0}: {1}")]
    Invalid(PathBuf, String),
}

/// The configuration file's contents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShimConfig {
    /// The `vessel` binary.
    pub vessel: PathBuf,
    /// The guest kernel: an ELF vmlinux (needed on kvm_pvm hosts) or a bzImage.
    pub kernel: PathBuf,
    /// The base initramfs (uncompressed newc cpio): busybox, the virtio and vsock modules
    /// in `/lib/modules` listed in `/etc/modules.order` (scripts/make-guest.sh builds one).
    pub initrd: PathBuf,
    /// The static `vessel-agent` binary.
    pub agent: PathBuf,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// vCPUs (1 on kvm_pvm hosts, whatever this says).
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// How long Start waits for the VM's agent, in seconds; by default 1800 on kvm_pvm
    /// hosts (the Debian kernel boots in minutes there) and 120 elsewhere.
    pub boot_timeout_secs: Option<u64>,
    /// The kernel command line; by default the nested-host profile on kvm_pvm hosts and
    /// `console=ttyS0 panic=-1 quiet` elsewhere.
    pub cmdline: Option<String>,
}

fn default_memory() -> u32 {
    256
}

fn default_cpus() -> u32 {
    1
}

impl ShimConfig {
    /// Reads the configuration from `$VESSEL_SHIM_CONFIG` or [`DEFAULT_PATH`].
    pub fn load() -> Result<Self, ConfigError> {
        let path = std::env::var_os(ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
        Self::from_file(&path)
    }

    /// Reads and checks the configuration file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
        let config: ShimConfig =
            toml::from_str(&text).map_err(|e| ConfigError::Parse(path.into(), e))?;
        for (what, file) in [
            ("vessel", &config.vessel),
            ("kernel", &config.kernel),
            ("initrd", &config.initrd),
            ("agent", &config.agent),
        ] {
            if !file.is_file() {
                let file = file.clone();
                return Err(ConfigError::Missing {
                    path: path.into(),
                    what,
                    file,
                });
            }
        }
        if config.memory_mib < 64 || config.cpus == 0 || config.cpus > 255 {
            let why = "memory_mib must be at least 64 and cpus 1 to 255".to_string();
            return Err(ConfigError::Invalid(path.into(), why));
        }
        Ok(config)
    }

    /// True when this host's /dev/kvm is kvm_pvm (guest ring 0 emulated).
    pub fn nested_host() -> bool {
        Path::new("/sys/module/kvm_pvm").exists()
    }

    /// The kernel command line for the VM.
    pub fn kernel_cmdline(&self) -> String {
        match &self.cmdline {
            Some(c) => c.clone(),
            None if Self::nested_host() => nested_cmdline(),
            None => CMDLINE.to_string(),
        }
    }

    /// How long Start waits for the agent.
    pub fn boot_timeout_secs(&self) -> u64 {
        match self.boot_timeout_secs {
            Some(s) => s,
            None if Self::nested_host() => 1800,
            None => 120,
        }
    }
}

/// scripts/nested-host.cmdline without its comment lines, joined with spaces.
fn nested_cmdline() -> String {
    NESTED_CMDLINE
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("shim.toml");
        std::fs::write(&path, body).unwrap();
        path
    }

    #[test]
    fn a_complete_file_loads_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["vessel", "vmlinux", "initrd", "agent"] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let d = dir.path().display();
        let body = format!(
            "vessel = \"{d}/vessel\"\nkernel = \"{d}/vmlinux\"\ninitrd = \"{d}/initrd\"\nagent = \"{d}/agent\"\n"
        );
        let config = ShimConfig::from_file(&write(dir.path(), &body)).unwrap();
        assert_eq!((config.memory_mib, config.cpus), (256, 1));
        std::fs::remove_file(dir.path().join("agent")).unwrap();
        let err = ShimConfig::from_file(&write(dir.path(), &body)).unwrap_err();
        assert!(err.to_string().contains("agent"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_sizes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = ShimConfig::from_file(&write(dir.path(), "vessel = \"/x\"\nkernal = \"/y\"\n"))
            .unwrap_err();
        assert!(err.to_string().contains("kernal"), "{err}");
        let err = ShimConfig::from_file(&dir.path().join("none.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read(..)), "{err}");
    }

    #[test]
    fn the_nested_command_line_has_no_comments() {
        let c = nested_cmdline();
        assert!(c.starts_with("console=ttyS0") && !c.contains('#'), "{c}");
    }
}
