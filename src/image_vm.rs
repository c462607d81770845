//! VMs made from an image (`vessel create --image`, `image = "…"` in a definition): their
//! `[boot]` comes from the image, their first disk is a qcow2 overlay of it, their last a
//! cloud-init seed disk giving the default user the owner's ssh key, and without NICs of
//! their own they get a `nat` NIC forwarding a 127.0.0.1 port chosen at start to the guest's port 22.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use toml::Spanned;

use crate::state::VmDir;
use crate::vmdef::{Disk, Nic, VmDefinition};

/// The image's default user on Debian's cloud images (cloud-init's `default_user`).
pub const DEFAULT_IMAGE_USER: &str = "debian";
pub const OVERLAY: &str = "disk.qcow2";
pub const SEED: &str = "seed.img";

/// `$XDG_DATA_HOME/vessel/ssh`: the key pair vessel makes for its user.
pub fn ssh_key_dir() -> Result<PathBuf> {
    let data = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".local/share")
        }
    };
    Ok(data.join("vessel/ssh"))
}

/// Give a definition text that names an image and has no `[boot]` the image's kernel, so
/// it parses; `None` when there is nothing to fill.
pub fn fill_boot(text: &str) -> Result<Option<String>> {
    let Ok(mut table) = text.parse::<toml::Table>() else {
        return Ok(None); // VmDefinition::parse reports the syntax error with its line.
    };
    let Some(name) = table.get("image").and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    if table.contains_key("boot") {
        return Ok(None);
    }
    let image = images::ImageStore::open(None)?.get(name)?;
    let (kernel, initrd, cmdline) = image
        .boot_files()
        .ok_or_else(|| anyhow!("image '{name}' has no kernel vessel can boot directly"))?;
    let nested = crate::image_boot::kvm_is_pvm();
    if nested {
        eprintln!("{}", crate::image_boot::NESTED_NOTICE);
    }
    let mut boot = toml::Table::new();
    let kernel = crate::image_boot::kernel_for_host(&kernel, nested);
    boot.insert("kernel".into(), path_value(&kernel));
    if let Some(i) = initrd {
        let i = crate::image_boot::initrd_for_host(&i, nested);
        boot.insert("initrd".into(), path_value(&i));
    }
    let cmdline = crate::image_boot::vm_cmdline(cmdline, nested, "");
    boot.insert("cmdline".into(), cmdline.into());
    table.insert("boot".into(), boot.into());
    Ok(Some(toml::to_string(&table)?))
}

fn path_value(p: &Path) -> toml::Value {
    p.to_string_lossy().into_owned().into()
}

/// Make the VM's files for an image VM and complete `def` to name them: overlay, seed,
/// NIC; the overlay is `disk_size` bytes or the image's size. Nothing happens for a VM
/// without an image.
pub fn provision(vm: &VmDir, def: &mut VmDefinition, disk_size: Option<u64>) -> Result<()> {
    let Some(name) = def.image.as_ref().map(|i| i.get_ref().clone()) else {
        return Ok(());
    };
    let image = images::ImageStore::open(None)?.get(&name)?;
    if def.nics.is_empty() {
        // The host port is chosen by each `vessel start` (crate::vm_ports).
        def.nics.push(Nic {
            mode: Spanned::new(0..0, "nat".into()),
            mac: None,
            forward: vec![Spanned::new(0..0, crate::vm_ports::auto_ssh_forward())],
            host_loopback: None,
            rate: None,
            rx_rate: None,
            tx_rate: None,
        });
    }
    let mut macs = Vec::new();
    for nic in &mut def.nics {
        let mac = match &nic.mac {
            Some(m) => parse_mac(m)?,
            None => random_mac()?,
        };
        nic.mac = Some(cloudinit::validate::format_mac(&mac));
        macs.push(cloudinit::SeedNic { mac });
    }
    let user_data = match &def.user_data {
        Some(p) => Some(
            std::fs::read_to_string(p.get_ref())
                .with_context(|| format!("user_data {}", p.get_ref().display()))?,
        ),
        None => None,
    };
    let key = cloudinit::ensure_user_key(&ssh_key_dir()?)?;
    let seed = cloudinit::SeedConfig {
        instance_id: format!("{}-{:016x}", vm.name, random_u64()?),
        hostname: vm.name.clone(),
        ssh_authorized_keys: vec![key.public_key_line()?],
        extra_user_data: user_data,
        nics: macs,
        default_user: None,
        // Cloud images mount each share at /mnt/TAG (cloud-init `mounts:`).
        mounts: def
            .shares
            .iter()
            .map(|s| cloudinit::SeedMount {
                tag: s.tag.get_ref().clone(),
                readonly: s.readonly,
            })
            .collect(),
    };
    // Check everything (user-data YAML included) before writing any file.
    let files = cloudinit::render(&seed).map_err(|e| anyhow!("cloud-init seed: {e}"))?;
    crate::state::ensure_dir(&vm.dir)?;
    image.create_overlay(&vm.path(OVERLAY), disk_size)?;
    cloudinit::write_seed_image(&files, &vm.path(SEED))?;
    let disk = |file: &str, format: &str, id: &str, readonly: bool| Disk {
        path: Spanned::new(0..0, vm.path(file)),
        format: Some(Spanned::new(0..0, format.into())),
        readonly,
        id: Some(Spanned::new(0..0, id.into())),
        size: None,
        // The overlay names the store's base by its absolute path (checked at import).
        allow_external_backing: file == OVERLAY,
        rate: None,
        iops: None,
    };
    def.disks.insert(0, disk(OVERLAY, "qcow2", "root", false));
    def.disks.push(disk(SEED, "raw", "cidata", true));
    if def.ssh.user.is_none() {
        def.ssh.user = Some(Spanned::new(0..0, DEFAULT_IMAGE_USER.into()));
    }
    Ok(())
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow!("invalid MAC address '{s}'"))?;
    parts
        .try_into()
        .map_err(|_| anyhow!("invalid MAC address '{s}'"))
}

/// 52:54:00:xx:xx:xx (QEMU's locally administered prefix), random below it.
fn random_mac() -> Result<[u8; 6]> {
    let r = random_u64()?.to_le_bytes();
    Ok([0x52, 0x54, 0x00, r[0], r[1], r[2]])
}

fn random_u64() -> Result<u64> {
    let mut b = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_are_made_local() {
        assert_eq!(
            parse_mac("52:54:00:ab:cd:ef").unwrap(),
            [0x52, 0x54, 0, 0xab, 0xcd, 0xef]
        );
        assert!(parse_mac("52:54:00:ab:cd").is_err() && parse_mac("zz:54:00:ab:cd:ef").is_err());
        let m = random_mac().unwrap();
        assert_eq!(&m[..3], &[0x52, 0x54, 0]);
    }
}
