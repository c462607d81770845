//! `manifest.toml` of an image: where it came from, its checksum and format, and what
//! vessel found in it to boot (kernel, initrd and command line, cached next to it).

use serde::{Deserialize, Serialize};

/// Version of the manifest layout; a manifest of another version is refused.
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub name: String,
    /// Where it came from: the imported file's path, or `build:SUITE`.
    pub source: String,
    /// File name of the base image inside the image directory.
    pub file: String,
    /// Format detected at import (`raw`, `qcow2`, …); always used from then on.
    pub format: String,
    /// sha256 of the base image file, hex.
    pub sha256: String,
    /// Virtual disk size in bytes.
    pub virtual_size: u64,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// What the image boots, when vessel found it (see `vessel image import`).
    pub boot: Option<BootInfo>,
    /// Packages and versions of a built image (`name=version`), for reproducibility.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
}

/// The image's own kernel, initrd and command line, extracted into the image directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootInfo {
    /// Kernel file name inside the image directory's `boot/`.
    pub kernel: String,
    pub initrd: Option<String>,
    /// The command line the image itself would boot with (grub.cfg's default entry or
    /// `root=UUID=… ro`), before vessel adds its console.
    pub cmdline: String,
    /// How it was found, for `vessel image ls`/`inspect` (e.g. `grub.cfg: Debian GNU/Linux`).
    pub found_by: String,
}

impl Manifest {
    /// Parse and check a manifest read from disk (untrusted enough to validate: a user may
    /// copy image directories between machines).
    pub fn parse(text: &str) -> Result<Self, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        if m.version != MANIFEST_VERSION {
            return Err(format!(
                "manifest version {} (this vessel reads version {MANIFEST_VERSION})",
                m.version
            ));
        }
        let plain = |s: &str| !s.is_empty() && !s.contains('/') && s != "." && s != "..";
        let boot_files_ok = m
            .boot
            .as_ref()
            .is_none_or(|b| plain(&b.kernel) && b.initrd.as_deref().is_none_or(plain));
        if !plain(&m.file) || !boot_files_ok {
            return Err("a file name in the manifest is not a plain file name".into());
        }
        if m.sha256.len() != 64 || !m.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("sha256 is not 64 hex digits".into());
        }
        m.format
            .parse::<block::Format>()
            .map_err(|e| format!("format: {e}"))?;
        Ok(m)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a manifest always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            name: "debian-12".into(),
            source: "/tmp/x.qcow2".into(),
            file: "base.qcow2".into(),
            format: "qcow2".into(),
            sha256: "ab".repeat(32),
            virtual_size: 2 << 30,
            created: 1,
            boot: Some(BootInfo {
                kernel: "vmlinuz".into(),
                initrd: Some("initrd.img".into()),
                cmdline: "root=UUID=x ro".into(),
                found_by: "grub.cfg".into(),
            }),
            packages: vec![],
        }
    }

    #[test]
    fn round_trips_and_refuses_what_it_should() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_toml()).unwrap(), m);
        let mut bad = sample();
        bad.file = "../../etc/passwd".into();
        assert!(Manifest::parse(&bad.to_toml())
            .unwrap_err()
            .contains("plain"));
        let mut bad = sample();
        bad.boot.as_mut().unwrap().initrd = Some("/etc/shadow".into());
        assert!(Manifest::parse(&bad.to_toml()).is_err());
        let mut bad = sample();
        bad.version = 9;
        assert!(Manifest::parse(&bad.to_toml())
            .unwrap_err()
            .contains("version 9"));
        let mut bad = sample();
        bad.format = "iso".into();
        assert!(Manifest::parse(&bad.to_toml())
            .unwrap_err()
            .contains("format"));
        assert!(Manifest::parse("garbage = [").is_err());
    }
}
