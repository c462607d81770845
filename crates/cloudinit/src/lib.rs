//! cloud-init NoCloud seed disks for vessel's VMs, so a stock cloud image boots into a VM
//! the user can ssh into.
//!
//! * [`render`] turns a [`SeedConfig`] into the three seed files ([`SeedFiles`]):
//!   `meta-data` (instance id, host name), `user-data` (vessel's `#cloud-config` giving
//!   the default user the owner's ssh keys, combined with optional user-data of the
//!   user's own, see [`userdata`]) and `network-config` (DHCP on each NIC, by MAC).
//! * [`write_seed_image`] writes them to a FAT volume labelled `CIDATA` ([`image`]).
//! * [`parse_console_host_keys`] reads the VM's ssh host keys from its console and
//!   [`known_hosts_lines`] formats them for `known_hosts` ([`hostkeys`]).
//! * [`ensure_user_key`] makes (once) and finds the owner's ssh key pair ([`sshkey`]).
//!
//! Every input is validated and every YAML document is built from typed values by
//! [`yaml`], so no input can add keys or lines to a document.

pub mod hostkeys;
pub mod image;
pub mod mounts;
pub mod network;
pub mod sshkey;
pub mod sshwire;
pub mod userdata;
pub mod validate;
pub mod yaml;

pub use hostkeys::{known_hosts_lines, parse_console_host_keys, HostKey, HostKeyError};
pub use image::{write_seed_image, ImageError};
pub use mounts::SeedMount;
pub use sshkey::{ensure_user_key, KeyError, KeyPair};
pub use userdata::{UserDataError, MAX_EXTRA_USER_DATA};
pub use validate::ValidateError;

use serde::Serialize;

/// What a VM's seed says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedConfig {
    /// cloud-init's instance id: a new id makes cloud-init run its first-boot modules
    /// again (`[A-Za-z0-9._:-]`, at most 128).
    pub instance_id: String,
    /// The VM's host name (RFC 1123; may be dotted).
    pub hostname: String,
    /// `authorized_keys` lines for the default user, `ALGO BASE64 [comment]` each.
    pub ssh_authorized_keys: Vec<String>,
    /// The user's own user-data (`#cloud-config`, a `#!` script, `#include`, MIME, ...).
    pub extra_user_data: Option<String>,
    /// The VM's NICs, in order.
    pub nics: Vec<SeedNic>,
    /// A name for the image's default user instead of the distribution's (`debian`).
    pub default_user: Option<String>,
    /// virtio-fs shares to mount at `/mnt/TAG` ([`mounts`]).
    pub mounts: Vec<SeedMount>,
}

/// One NIC of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedNic {
    /// Its MAC address (unicast).
    pub mac: [u8; 6],
}

/// The contents of the seed's three files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFiles {
    /// `meta-data`.
    pub meta_data: String,
    /// `user-data`.
    pub user_data: String,
    /// `network-config`.
    pub network_config: String,
}

/// Why a seed could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input was refused.
    #[error(transparent)]
    Invalid(#[from] ValidateError),
    /// The user-data could not be produced.
    #[error(transparent)]
    UserData(#[from] UserDataError),
    /// A YAML document could not be written.
    #[error(transparent)]
    Yaml(#[from] yaml::YamlError),
}

/// `meta-data`.
#[derive(Serialize)]
struct MetaData<'a> {
    #[serde(rename = "instance-id")]
    instance_id: &'a str,
    #[serde(rename = "local-hostname")]
    local_hostname: &'a str,
}

/// Validates `config` and renders the seed's files.
pub fn render(config: &SeedConfig) -> Result<SeedFiles, Error> {
    validate::instance_id(&config.instance_id)?;
    validate::hostname(&config.hostname)?;
    if let Some(user) = &config.default_user {
        validate::user_name(user)?;
    }
    let keys = config
        .ssh_authorized_keys
        .iter()
        .enumerate()
        .map(|(i, k)| validate::authorized_key(i, k))
        .collect::<Result<Vec<_>, _>>()?;
    let macs: Vec<[u8; 6]> = config.nics.iter().map(|n| n.mac).collect();
    for mac in &macs {
        validate::mac(mac)?;
    }
    validate::distinct_macs(&macs)?;
    for m in &config.mounts {
        mounts::check_tag(&m.tag)?;
    }
    let meta = MetaData {
        instance_id: &config.instance_id,
        local_hostname: &config.hostname,
    };
    Ok(SeedFiles {
        meta_data: yaml::to_string(&meta)?,
        user_data: userdata::render(
            &keys,
            config.default_user.as_deref(),
            config.extra_user_data.as_deref(),
            &mounts::entries(&config.mounts),
        )?,
        network_config: network::render(&macs)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sshwire::tests::fake_blob;

    pub(crate) fn config() -> SeedConfig {
        SeedConfig {
            instance_id: "vm-1".into(),
            hostname: "yes".into(),
            ssh_authorized_keys: vec![format!(
                "ssh-ed25519 {} me@host\n",
                fake_blob("ssh-ed25519")
            )],
            extra_user_data: None,
            nics: vec![SeedNic {
                mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            }],
            default_user: None,
            mounts: Vec::new(),
        }
    }

    #[test]
    fn renders_all_three() {
        let files = render(&config()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            files.meta_data,
            "instance-id: \"vm-1\"\nlocal-hostname: \"yes\"\n"
        );
        let key = format!("ssh-ed25519 {} me@host", fake_blob("ssh-ed25519"));
        assert_eq!(
            files.user_data,
            format!("#cloud-config\nusers:\n- \"default\"\nssh_authorized_keys:\n- \"{key}\"\nssh_pwauth: false\n")
        );
        assert!(files
            .network_config
            .contains("macaddress: \"52:54:00:12:34:56\""));
    }

    #[test]
    fn default_user_is_renamed() {
        let mut c = config();
        c.default_user = Some("vessel".into());
        let files = render(&c).unwrap_or_else(|e| panic!("{e}"));
        assert!(files
            .user_data
            .ends_with("system_info:\n  default_user:\n    name: \"vessel\"\n"));
    }

    #[test]
    fn shares_are_mounted_at_mnt_tag() {
        let mut c = config();
        c.mounts = vec![
            SeedMount {
                tag: "src".into(),
                readonly: false,
            },
            SeedMount {
                tag: "data".into(),
                readonly: true,
            },
        ];
        let files = render(&c).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            files.user_data.ends_with(
                "mounts:\n- - \"src\"\n  - \"/mnt/src\"\n  - \"virtiofs\"\n  - \"rw,nofail\"\n  - \"0\"\n  - \"0\"\n\
                 - - \"data\"\n  - \"/mnt/data\"\n  - \"virtiofs\"\n  - \"ro,nofail\"\n  - \"0\"\n  - \"0\"\n"
            ),
            "{}",
            files.user_data
        );
        // Valid YAML whose mounts are what cloud-init's cc_mounts reads.
        let body = files.user_data.trim_start_matches("#cloud-config\n");
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(body).unwrap();
        assert_eq!(doc["mounts"][1][1].as_str(), Some("/mnt/data"));
    }

    #[test]
    fn invalid_inputs_are_refused() {
        let cases: Vec<fn(&mut SeedConfig)> = vec![
            |c| c.instance_id = "a/b".into(),
            |c| c.hostname = "bad host".into(),
            |c| c.hostname = "x\ninstance-id: y".into(),
            |c| c.default_user = Some("Root".into()),
            |c| c.ssh_authorized_keys.push("ssh-ed25519 AAAA".into()),
            |c| c.nics.push(c.nics[0]),
            |c| c.nics[0].mac = [0xff; 6],
            |c| {
                c.mounts.push(SeedMount {
                    tag: "../etc".into(),
                    readonly: false,
                })
            },
        ];
        for (i, change) in cases.into_iter().enumerate() {
            let mut c = config();
            change(&mut c);
            assert!(matches!(render(&c), Err(Error::Invalid(_))), "case {i}");
        }
    }
}
