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
    /// A virtio-vsock device (docs/vsock.md).
    pub vsock: Option<VsockDef>,
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
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Serial {
    /// Serial log file (background VMs: `serial.log` in the VM's state directory).
    pub log: Option<PathBuf>,
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
        let mut errors = Vec::new();
        let mut err = |span: Range<usize>, message: String| {
            let (line, column) = locate(text, span);
            errors.push(DefinitionError {
                line,
                column,
                message,
            });
        };
        if !valid_name(def.name.get_ref()) {
            err(def.name.span(), format!("invalid VM name '{}': use letters, digits, '-', '_' or '.', starting with a letter or digit (at most 63)", def.name.get_ref()));
        }
        if !(1..=i64::from(vmm::config::MAX_CPUS)).contains(def.cpus.get_ref()) {
            err(
                def.cpus.span(),
                format!("cpus must be between 1 and {}", vmm::config::MAX_CPUS),
            );
        }
        match parse_size(def.memory.get_ref(), 1 << 20) {
            Ok(b) if b < arch::memory_map::MIN_MEMORY => {
                err(def.memory.span(), "memory must be at least 2M".into())
            }
            Ok(b) if b % 4096 != 0 => {
                err(def.memory.span(), "memory must be a multiple of 4K".into())
            }
            Ok(_) => {}
            Err(e) => err(def.memory.span(), e),
        }
        for d in &def.disks {
            if let Some(f) = &d.format {
                if !FORMATS.contains(&f.get_ref().as_str()) {
                    err(
                        f.span(),
                        format!(
                            "unknown disk format '{}' (expected one of {})",
                            f.get_ref(),
                            FORMATS.join(", ")
                        ),
                    );
                }
            }
            if let Some(s) = &d.size {
                if let Err(e) = parse_size(s.get_ref(), 1) {
                    err(s.span(), e);
                }
            }
            if let Some(id) = &d.id {
                if id.get_ref().len() > 20 {
                    err(id.span(), "disk id is longer than 20 bytes".into());
                }
            }
        }
        for n in &def.nics {
            let mode = n.mode.get_ref();
            let known = [
                "nat",
                "internal:",
                "natnet:",
                "hostonly:",
                "bridged:",
                "tap:",
            ];
            if !known.iter().any(|k| {
                if k.ends_with(':') {
                    mode.starts_with(k) && mode.len() > k.len()
                } else {
                    mode == k
                }
            }) {
                err(n.mode.span(), format!("unknown NIC mode '{mode}' (nat, natnet:NAME, internal:NAME, hostonly:NAME, bridged:IFACE or tap:NAME)"));
            }
            let mut forwards_ok = true;
            for f in &n.forward {
                if parse_forward(f.get_ref()).is_none() {
                    forwards_ok = false;
                    err(
                        f.span(),
                        format!(
                            "invalid forward '{}' (expected tcp:HOSTADDR:HOSTPORT-:GUESTPORT)",
                            f.get_ref()
                        ),
                    );
                }
            }
            // What the NIC parser says beyond the checks above (a bad name, a MAC,
            // forwards on a mode without NAT), at the NIC's mode.
            if forwards_ok {
                if let Err(e) = net::parse_nic(&nic_spec(n)) {
                    if !matches!(e, net::ConfigError::UnknownMode(_)) {
                        err(n.mode.span(), format!("NIC: {e}"));
                    }
                }
            }
        }
        if let Some(image) = &def.image {
            if !valid_name(image.get_ref()) {
                err(
                    image.span(),
                    format!("invalid image name '{}'", image.get_ref()),
                );
            }
        }
        if let (Some(u), None) = (&def.user_data, &def.image) {
            err(
                u.span(),
                "user_data is only for VMs made from an image".into(),
            );
        }
        if let Some(user) = &def.ssh.user {
            if let Err(e) = cloudinit::validate::user_name(user.get_ref()) {
                err(user.span(), format!("ssh user: {e}"));
            }
        }
        if let Some(v) = &def.vsock {
            let check = u64::try_from(*v.cid.get_ref())
                .map_err(|_| virtio::vsock::VsockError::NegativeCid(*v.cid.get_ref()))
                .and_then(|cid| virtio::vsock::check_config(cid, v.uds.get_ref()));
            match check {
                Err(e @ virtio::vsock::VsockError::NegativeCid(_)) => {
                    err(v.cid.span(), format!("vsock: {e}"))
                }
                Err(e @ virtio::vsock::VsockError::Cid(_)) => {
                    err(v.cid.span(), format!("vsock: {e}"))
                }
                Err(e) => err(v.uds.span(), format!("vsock: {e}")),
                Ok(()) => {}
            }
        }
        if errors.is_empty() {
            Ok(def)
        } else {
            Err(fail(errors))
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
        if let Some(v) = &mut self.vsock {
            abs(&mut v.uds);
        }
    }

    pub fn memory_bytes(&self) -> u64 {
        parse_size(self.memory.get_ref(), 1 << 20).unwrap_or(512 << 20)
    }

    /// Host ports forwarded to the guest: `(proto, host address, host port, guest port)`.
    pub fn forwards(&self) -> Vec<(String, String, u16, u16)> {
        self.nics
            .iter()
            .flat_map(|n| n.forward.iter().filter_map(|f| parse_forward(f.get_ref())))
            .collect()
    }

    /// The VMM configuration for this definition.
    pub fn vm_config(&self, serial: vmm::SerialMode) -> anyhow::Result<vmm::VmConfig> {
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
            });
        }
        let mut nics = Vec::new();
        for n in &self.nics {
            let spec = nic_spec(n);
            nics.push(net::parse_nic(&spec).map_err(|e| anyhow::anyhow!("nic '{spec}': {e}"))?);
        }
        Ok(vmm::VmConfig {
            kernel: self.boot.kernel.get_ref().clone(),
            initrd: self.boot.initrd.as_ref().map(|i| i.get_ref().clone()),
            cmdline: self.boot.cmdline.clone(),
            memory: self.memory_bytes(),
            cpus: *self.cpus.get_ref() as u8,
            serial,
            disks,
            rng: false,
            console2: None,
            nics,
            pit: vmm::PitMode::Auto,
            emulator_fixups: vmm::EmulatorFixups::Auto,
            vsock: self.vsock.as_ref().map(|v| vmm::VsockConfig {
                cid: *v.cid.get_ref() as u64,
                uds: v.uds.get_ref().clone(),
            }),
        })
    }
}

/// A `[[nic]]` as a `--nic` value.
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
    spec
}

/// `tcp:127.0.0.1:2222-:22` → ("tcp", "127.0.0.1", 2222, 22).
pub fn parse_forward(s: &str) -> Option<(String, String, u16, u16)> {
    let (proto, rest) = s.split_once(':')?;
    if proto != "tcp" && proto != "udp" {
        return None;
    }
    let (host, guest) = rest.split_once("-:")?;
    let (addr, port) = host.rsplit_once(':').unwrap_or(("127.0.0.1", host));
    Some((
        proto.into(),
        if addr.is_empty() {
            "127.0.0.1".into()
        } else {
            addr.into()
        },
        port.parse().ok()?,
        guest.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "dev"
cpus = 2
memory = "1G"

[boot]
kernel = "bzImage"
initrd = "initramfs.cpio.gz"

[[disk]]
path = "disk.qcow2"
format = "qcow2"
size = "8G"

[[nic]]
mode = "nat"
forward = ["tcp:127.0.0.1:2222-:22"]
"#;

    #[test]
    fn parses_a_full_definition() {
        let mut d = VmDefinition::parse(Path::new("vm.toml"), GOOD).unwrap();
        assert_eq!(d.name.get_ref(), "dev");
        assert_eq!(d.memory_bytes(), 1 << 30);
        d.resolve_paths(Path::new("/vms"));
        assert_eq!(d.boot.kernel.get_ref(), Path::new("/vms/bzImage"));
        assert_eq!(
            d.forwards(),
            vec![("tcp".into(), "127.0.0.1".into(), 2222, 22)]
        );
        assert_eq!(d.boot.cmdline, default_cmdline());
    }

    #[test]
    fn vsock_section() {
        let text = format!("{GOOD}\n[vsock]\ncid = 5\nuds = \"v.sock\"\n");
        let mut d = VmDefinition::parse(Path::new("vm.toml"), &text).unwrap();
        d.resolve_paths(Path::new("/vms"));
        let cfg = d.vm_config(vmm::SerialMode::None).unwrap();
        assert_eq!(
            cfg.vsock,
            Some(vmm::VsockConfig {
                cid: 5,
                uds: "/vms/v.sock".into()
            })
        );
        for (bad, line, what) in [
            ("cid = 2\nuds = \"v\"", 20, "guest CID 2"),
            ("cid = -1\nuds = \"v\"", 20, "guest CID -1"),
            ("cid = 3\nuds = \"\"", 21, "empty"),
            ("cid = 3", 19, "missing field `uds`"),
            ("cid = 3\nuds = \"v\"\nport = 1", 22, "unknown field"),
        ] {
            let text = format!("{GOOD}\n[vsock]\n{bad}\n");
            let e = VmDefinition::parse(Path::new("vm.toml"), &text).unwrap_err();
            assert_eq!(e.errors[0].line, line, "{bad}: {e}");
            assert!(e.errors[0].message.contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_point_at_the_line() {
        let text = GOOD
            .replace("cpus = 2", "cpus = 0")
            .replace("format = \"qcow2\"", "format = \"floppy\"");
        let e = VmDefinition::parse(Path::new("vm.toml"), &text).unwrap_err();
        let lines: Vec<usize> = e.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 12]);
        assert!(
            e.to_string()
                .contains("vm.toml:3:8: cpus must be between 1 and 254"),
            "{e}"
        );
        let unknown = GOOD.replace("memory = \"1G\"", "memroy = \"1G\"");
        let e = VmDefinition::parse(Path::new("vm.toml"), &unknown).unwrap_err();
        assert_eq!(e.errors[0].line, 4);
        assert!(
            e.errors[0].message.contains("unknown field `memroy`"),
            "{e}"
        );
        let syntax = GOOD.replace("cpus = 2", "cpus = = 2");
        assert_eq!(
            VmDefinition::parse(Path::new("vm.toml"), &syntax)
                .unwrap_err()
                .errors[0]
                .line,
            3
        );
    }

    #[test]
    fn nic_errors_point_at_the_nic() {
        let text = GOOD.replace("mode = \"nat\"", "mode = \"internal:lan\"");
        let e = VmDefinition::parse(Path::new("vm.toml"), &text).unwrap_err();
        assert_eq!(e.errors.len(), 1, "{e}");
        assert_eq!(e.errors[0].line, 16, "the mode line");
        assert!(e.errors[0].message.contains("forward="), "{e}");
        let natnet = GOOD.replace("mode = \"nat\"", "mode = \"natnet:lab\"");
        assert!(VmDefinition::parse(Path::new("vm.toml"), &natnet).is_ok());
        let on = GOOD.replace("mode = \"nat\"", "mode = \"nat\"\nhost_loopback = true");
        let d = VmDefinition::parse(Path::new("vm.toml"), &on).unwrap();
        assert_eq!(
            nic_spec(&d.nics[0]),
            "nat,forward=tcp:127.0.0.1:2222-:22,host-loopback=on"
        );
        assert!(d.vm_config(vmm::SerialMode::None).unwrap().nics[0].host_loopback);
        let plain = VmDefinition::parse(Path::new("vm.toml"), GOOD).unwrap();
        assert!(!plain.vm_config(vmm::SerialMode::None).unwrap().nics[0].host_loopback);
        let tap = GOOD
            .replace("mode = \"nat\"", "mode = \"tap:t0\"\nhost_loopback = true")
            .replace("forward = [\"tcp:127.0.0.1:2222-:22\"]", "");
        let e = VmDefinition::parse(Path::new("vm.toml"), &tap).unwrap_err();
        assert!(e.to_string().contains("host-loopback="), "{e}");
        let bad_name = GOOD.replace("mode = \"nat\"", "mode = \"hostonly:a/b\"");
        let e = VmDefinition::parse(Path::new("vm.toml"), &bad_name).unwrap_err();
        assert!(e.errors[0].message.contains("invalid name"), "{e}");
    }

    #[test]
    fn names_and_forwards() {
        assert!(valid_name("web-1.test_a"));
        assert!(
            !valid_name("-x")
                && !valid_name("")
                && !valid_name("a/b")
                && !valid_name(&"a".repeat(64))
        );
        assert_eq!(
            parse_forward("tcp::8080-:80"),
            Some(("tcp".into(), "127.0.0.1".into(), 8080, 80))
        );
        assert_eq!(
            parse_forward("tcp:2222-:22"),
            Some(("tcp".into(), "127.0.0.1".into(), 2222, 22))
        );
        assert!(parse_forward("sctp:1-:2").is_none() && parse_forward("tcp:1:2").is_none());
    }
}
