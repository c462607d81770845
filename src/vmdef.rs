//! VM definitions: one TOML file per VM (see docs/vm-definition.md and
//! examples/dev.vm.toml), parsed with line-precise errors and turned into a VMM config.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::size::parse_size;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmDefinition {
    pub name: Spanned<String>,
    #[serde(default = "default_cpus")]
    pub cpus: Spanned<i64>,
    #[serde(default = "default_memory")]
    pub memory: Spanned<String>,
    pub boot: Boot,
    #[serde(default, rename = "disk")]
    pub disks: Vec<Disk>,
    #[serde(default, rename = "nic")]
    pub nics: Vec<Nic>,
    #[serde(default)]
    pub serial: Serial,
    /// An image of the store (`vessel image ls`) this VM boots: at create, vessel fills
    /// `[boot]` from it, puts a qcow2 overlay of it first among the disks and a cloud-init
    /// seed disk last (docs/images.md).
    pub image: Option<Spanned<String>>,
    /// With `image`: more cloud-init user-data (`#cloud-config`, a script, MIME, ...).
    pub user_data: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub ssh: Ssh,
    /// A virtio-rng device fed from the host's getrandom.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rng: bool,
    /// KVM's in-kernel PIT: `auto` (default: multiboot kernels only), `on` or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pit: Option<Spanned<String>>,
    /// A second console (virtio-console) whose output goes to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console2: Option<Spanned<PathBuf>>,
    /// A virtio-vsock device (docs/vsock.md).
    pub vsock: Option<VsockDef>,
    /// Shared folders (virtio-fs; docs/shared-folders.md).
    #[serde(default, rename = "share", skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<crate::share_def::ShareDef>,
    /// A virtio-balloon device (docs/balloon.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<crate::balloon_def::BalloonDef>,
    /// Ansible groups the VM is in (`vessel inventory`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Spanned<String>>,
    /// What runs in the guest over SSH on its first start and on `vessel provision`.
    #[serde(default, rename = "provision", skip_serializing_if = "Vec::is_empty")]
    pub provisions: Vec<Spanned<crate::provision_def::Provisioner>>,
}

/// `[vsock]`: the guest's CID and the host socket (relative to the definition's directory).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VsockDef {
    pub cid: Spanned<i64>,
    pub uds: Spanned<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    /// The user `vessel ssh` and `vessel cp` log in as (default: the image's default user
    /// `debian` for VMs made from an image, else root).
    pub user: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    pub kernel: Spanned<PathBuf>,
    pub initrd: Option<Spanned<PathBuf>>,
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub path: Spanned<PathBuf>,
    pub format: Option<Spanned<String>>,
    #[serde(default)]
    pub readonly: bool,
    pub id: Option<Spanned<String>>,
    /// Create the image with this virtual size when it does not exist yet (sparse).
    pub size: Option<Spanned<String>>,
    /// Follow backing files, parents and extents the image names by absolute paths or with
    /// `..` (refused otherwise). vessel sets it on overlays it makes over files elsewhere.
    #[serde(
        default,
        rename = "allow-external-backing",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub allow_external_backing: bool,
    /// Bandwidth limit in bytes per second (`10M`), as `--disk …,rate=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Spanned<String>>,
    /// Requests per second, as `--disk …,iops=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    pub mode: Spanned<String>,
    pub mac: Option<String>,
    #[serde(default)]
    pub forward: Vec<Spanned<String>>,
    /// Let the guest reach the host's loopback at the gateway (nat and natnet only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_loopback: Option<bool>,
    /// Bandwidth limits in bytes per second, as `--nic …,rate=` (both directions),
    /// `rx-rate=` and `tx-rate=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Serial {
    /// Refused with an error: a background VM's serial output always goes to `serial.log`
    /// in its state directory. Kept in the schema so the error says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Spanned<PathBuf>>,
}

fn default_cpus() -> Spanned<i64> {
    Spanned::new(0..0, 1)
}
fn default_memory() -> Spanned<String> {
    Spanned::new(0..0, "512M".into())
}
pub fn default_cmdline() -> String {
    "console=ttyS0 reboot=k panic=-1".into()
}

/// One problem in a definition file, located by line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// All problems of a file, formatted `FILE:LINE:COL: message`.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.iter().map(|e| format!("{}:{}:{}: {}", .file.display(), e.line, e.column, e.message)).collect::<Vec<_>>().join("\n"))]
pub struct DefinitionErrors {
    pub file: PathBuf,
    pub errors: Vec<DefinitionError>,
}

fn locate(text: &str, span: Range<usize>) -> (usize, usize) {
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// VM names follow the image store's rules (a letter or digit, then letters, digits, '-',
/// '_' or '.', at most 63 bytes).
pub use images::valid_name;

pub const FORMATS: &[&str] = &["raw", "qcow2", "vdi", "vhd", "vmdk", "vhdx"];

impl VmDefinition {
    /// Parse and check `text` (the content of `file`).
    pub fn parse(file: &Path, text: &str) -> Result<Self, DefinitionErrors> {
        let fail = |errors| DefinitionErrors {
            file: file.to_path_buf(),
            errors,
        };
        let def: VmDefinition = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| locate(text, s));
            fail(vec![DefinitionError {
                line,
                column,
                message: e.message().trim().to_string(),
            }])
        })?;
        let errors: Vec<DefinitionError> = crate::vmdef_checks::problems(&def)
            .into_iter()
            .map(|(span, message)| {
                let (line, column) = locate(text, span);
                DefinitionError {
                    line,
                    column,
                    message,
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(def)
        } else {
            Err(fail(errors))
        }
    }

    /// Check that the files the definition names exist (paths already made absolute):
    /// kernel, initrd, user_data, and disks without a `size` to create them from.
    /// `validate` and `create` run it; loading a VM's definition does not, so a VM whose
    /// disk went away still lists and reports the missing file when it starts.
    pub fn check_files(&self, file: &Path, text: &str) -> Result<(), DefinitionErrors> {
        let mut errors = Vec::new();
        let mut need = |p: &Spanned<PathBuf>, what: &str| {
            if !p.get_ref().is_file() {
                let (line, column) = locate(text, p.span());
                errors.push(DefinitionError {
                    line,
                    column,
                    message: format!(
                        "{what} {} does not exist or is not a file",
                        p.get_ref().display()
                    ),
                });
            }
        };
        need(&self.boot.kernel, "kernel");
        if let Some(i) = &self.boot.initrd {
            need(i, "initrd");
        }
        if let Some(u) = &self.user_data {
            need(u, "user_data");
        }
        for d in self.disks.iter().filter(|d| d.size.is_none()) {
            need(&d.path, "disk");
        }
        let missing = crate::provision_def::missing_files(&self.provisions);
        let missing_dirs = crate::share_def::missing_dirs(&self.shares);
        for (span, message) in missing.into_iter().chain(missing_dirs) {
            let (line, column) = locate(text, span);
            errors.push(DefinitionError {
                line,
                column,
                message,
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DefinitionErrors {
                file: file.to_path_buf(),
                errors,
            })
        }
    }

    /// Read and check a definition file.
    pub fn load(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        Ok(Self::parse(file, &text)?)
    }

    /// Make relative paths absolute against `dir` (the definition file's directory).
    pub fn resolve_paths(&mut self, dir: &Path) {
        let abs = |p: &mut Spanned<PathBuf>| {
            if p.get_ref().is_relative() {
                *p = Spanned::new(p.span(), dir.join(p.get_ref()));
            }
        };
        abs(&mut self.boot.kernel);
        if let Some(i) = &mut self.boot.initrd {
            abs(i);
        }
        for d in &mut self.disks {
            abs(&mut d.path);
        }
        if let Some(u) = &mut self.user_data {
            abs(u);
        }
        if let Some(c) = &mut self.console2 {
            abs(c);
        }
        if let Some(v) = &mut self.vsock {
            abs(&mut v.uds);
        }
        crate::provision_def::resolve_paths(&mut self.provisions, dir);
        crate::share_def::resolve_paths(&mut self.shares, dir);
    }

    pub fn memory_bytes(&self) -> u64 {
        parse_size(self.memory.get_ref()).unwrap_or(512 << 20)
    }

    /// Host ports forwarded to the guest, read by the parser `--nic` uses.
    pub fn forwards(&self) -> Vec<net::Forward> {
        self.nics
            .iter()
            .flat_map(|n| {
                n.forward
                    .iter()
                    .filter_map(|f| net::config::parse_forward(f.get_ref()).ok())
            })
            .collect()
    }

    /// The VMM configuration for this definition: its boot source and machine, with
    /// `serial` as COM1 on this host.
    pub fn vm_config(&self, serial: vmm::SerialMode) -> anyhow::Result<vmm::VmConfig> {
        let cfg = vmm::VmConfig {
            boot: Some(vmm::BootSource::from(&self.boot)),
            machine: vmm::MachineConfig::try_from(self)?,
            host: vmm::HostResources {
                serial,
                emulator_fixups: vmm::EmulatorFixups::Auto,
                ..Default::default()
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn disk_configs(&self) -> anyhow::Result<Vec<vmm::DiskConfig>> {
        let mut disks = Vec::new();
        for d in &self.disks {
            disks.push(vmm::DiskConfig {
                path: d.path.get_ref().clone(),
                read_only: d.readonly,
                id: d.id.as_ref().map(|i| i.get_ref().clone()),
                format: match &d.format {
                    Some(f) => Some(
                        f.get_ref()
                            .parse()
                            .map_err(|e: block::Error| anyhow::anyhow!("{e}"))?,
                    ),
                    None => None,
                },
                allow_external_backing: d.allow_external_backing,
                honour_flush: true,
                rate_limit: d.rate_limit()?,
            });
        }
        Ok(disks)
    }
}

impl From<&Boot> for vmm::BootSource {
    fn from(boot: &Boot) -> Self {
        vmm::BootSource {
            kernel: boot.kernel.get_ref().clone(),
            initrd: boot.initrd.as_ref().map(|i| i.get_ref().clone()),
            cmdline: boot.cmdline.clone(),
        }
    }
}

impl TryFrom<&VmDefinition> for vmm::MachineConfig {
    type Error = anyhow::Error;

    /// The machine a definition describes: its size and devices, NICs converted field
    /// by field (never re-parsed from strings).
    fn try_from(def: &VmDefinition) -> anyhow::Result<Self> {
        let mut nics = Vec::new();
        for n in &def.nics {
            let nic = n.to_config(AutoPorts::Refused);
            nics.push(nic.map_err(|e| anyhow::anyhow!("nic '{}': {e}", n.mode.get_ref()))?);
        }
        Ok(vmm::MachineConfig {
            memory: def.memory_bytes(),
            cpus: *def.cpus.get_ref() as u8,
            pit: match &def.pit {
                Some(p) => parse_pit(p.get_ref()).map_err(|e| anyhow::anyhow!(e))?,
                None => vmm::PitMode::Auto,
            },
            disks: def.disk_configs()?,
            rng: def.rng,
            console2: def.console2.as_ref().map(|c| c.get_ref().clone()),
            nics,
            vsock: def.vsock.as_ref().map(|v| vmm::VsockConfig {
                cid: *v.cid.get_ref() as u64,
                uds: v.uds.get_ref().clone(),
            }),
            shares: crate::share_def::to_shares(&def.shares)?,
            balloon: def.balloon.as_ref().map(|b| b.to_config()),
        })
    }
}

/// `auto`, `on` or `off`.
pub fn parse_pit(s: &str) -> Result<vmm::PitMode, String> {
    match s {
        "auto" => Ok(vmm::PitMode::Auto),
        "on" => Ok(vmm::PitMode::On),
        "off" => Ok(vmm::PitMode::Off),
        _ => Err(format!("invalid pit '{s}': expected auto, on or off")),
    }
}

impl Nic {
    /// The `[[nic]]` of a `--nic` value (`nat,mac=…,forward=…,host-loopback=on`), checked
    /// by the parser `vessel run` uses; the forwards keep their spelling.
    pub fn from_spec(spec: &str) -> Result<Nic, String> {
        net::parse_nic(spec).map_err(|e| e.to_string())?;
        let mut items = spec.split(',');
        let mut nic = Nic {
            mode: Spanned::new(0..0, items.next().unwrap_or_default().to_string()),
            mac: None,
            forward: Vec::new(),
            host_loopback: None,
            rate: None,
            rx_rate: None,
            tx_rate: None,
        };
        for item in items {
            match item.split_once('=') {
                Some(("mac", m)) => nic.mac = Some(m.to_string()),
                Some(("rate", r)) => nic.rate = Some(r.to_string()),
                Some(("rx-rate", r)) => nic.rx_rate = Some(r.to_string()),
                Some(("tx-rate", r)) => nic.tx_rate = Some(r.to_string()),
                Some(("forward", f)) => nic.forward.push(Spanned::new(0..0, f.to_string())),
                Some(("host-loopback", v)) => nic.host_loopback = Some(v == "on"),
                _ => return Err(format!("unknown NIC option {item:?}")),
            }
        }
        Ok(nic)
    }

    /// Whether forwards may be added (nat and natnet).
    pub fn is_nat(&self) -> bool {
        let mode = self.mode.get_ref();
        mode == "nat" || mode.starts_with("natnet:")
    }
}

/// What a forward whose host port is `auto` becomes when a `[[nic]]` is converted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AutoPorts {
    /// A placeholder port, for checks before `vessel start` chooses one.
    Placeholder,
    /// Refused: `vessel start` replaces each `auto` before the VM is built.
    Refused,
}

/// Why a `[[nic]]` is not a NIC vessel can build.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    #[error(transparent)]
    Net(#[from] net::ConfigError),
    #[error("forward '{0}': {1}")]
    Forward(String, String),
    #[error("forward '{0}': its host port is chosen by `vessel start`")]
    AutoPort(String),
    #[error("{0}")]
    Rate(#[from] virtio::rate_limiter::RateParseError),
    #[error("host_loopback is for the nat and natnet modes only")]
    HostLoopbackNotNat,
}

impl Nic {
    /// The NIC this `[[nic]]` describes, field by field, checked by the NIC's own rules
    /// ([`net::NicConfig::validate`]).
    pub fn to_config(&self, auto: AutoPorts) -> Result<net::NicConfig, NicError> {
        use virtio::rate_limiter::parse_byte_rate;
        let mut nic = net::NicConfig::new(net::parse_nic_mode(self.mode.get_ref())?);
        nic.mac = self.mac.as_deref().map(net::parse_mac).transpose()?;
        for f in &self.forward {
            let spec = f.get_ref();
            let forward = match auto {
                AutoPorts::Refused if crate::vm_ports::is_auto(spec) => {
                    return Err(NicError::AutoPort(spec.clone()))
                }
                AutoPorts::Refused => net::parse_forward(spec).map_err(|e| e.to_string()),
                AutoPorts::Placeholder => crate::vm_ports::parse(spec),
            };
            nic.forwards
                .push(forward.map_err(|e| NicError::Forward(spec.clone(), e))?);
        }
        if self.host_loopback.is_some() && !self.is_nat() {
            return Err(NicError::HostLoopbackNotNat);
        }
        nic.host_loopback = self.host_loopback.unwrap_or(false);
        if let Some(rate) = &self.rate {
            let bucket = Some(parse_byte_rate(rate)?);
            (nic.rx_limit.bandwidth, nic.tx_limit.bandwidth) = (bucket, bucket);
        }
        if let Some(rate) = &self.rx_rate {
            nic.rx_limit.bandwidth = Some(parse_byte_rate(rate)?);
        }
        if let Some(rate) = &self.tx_rate {
            nic.tx_limit.bandwidth = Some(parse_byte_rate(rate)?);
        }
        nic.validate()?;
        Ok(nic)
    }
}

/// A `[[nic]]` as a `--nic` value.
#[cfg(test)]
fn nic_spec(n: &Nic) -> String {
    let mut spec = n.mode.get_ref().clone();
    if let Some(mac) = &n.mac {
        spec += &format!(",mac={mac}");
    }
    for f in &n.forward {
        spec += &format!(",forward={}", f.get_ref());
    }
    if let Some(on) = n.host_loopback {
        spec += if on {
            ",host-loopback=on"
        } else {
            ",host-loopback=off"
        };
    }
    for (key, rate) in [
        ("rate", &n.rate),
        ("rx-rate", &n.rx_rate),
        ("tx-rate", &n.tx_rate),
    ] {
        if let Some(rate) = rate {
            spec += &format!(",{key}={rate}");
        }
    }
    spec
}

#[cfg(test)]
mod tests;
