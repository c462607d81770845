//! `vessel export NAME --format ova FILE.ova`: OVF 1.0 laid out as VirtualBox writes it,
//! every disk as a streamOptimized VMDK written by crates/block, a SHA256 manifest, in one
//! tar (descriptor, disks, manifest: VirtualBox's order).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use super::{ovf, vm_name};
use crate::state::StateDir;
use crate::vmdef::VmDefinition;

/// The VirtualBox network name for a vessel NIC mode.
fn vbox_network(mode: &str) -> &'static str {
    match mode.split_once(':').map_or(mode, |(k, _)| k) {
        "hostonly" => "HostOnly",
        "internal" => "Internal",
        "bridged" | "tap" => "Bridged",
        _ => "NAT",
    }
}

/// `vessel export NAME --format ova FILE.ova`.
pub fn export(state: &StateDir, name: &str, file: &Path) -> Result<i32> {
    let vm = state.vm(name)?;
    let def = crate::vm_archive::stopped(&vm)?;
    if file.exists() {
        bail!(
            "{} exists already; refusing to overwrite it",
            file.display()
        );
    }
    let staging = state
        .root
        .join(format!(".ova-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let result = export_staged(&def, name, &staging, file);
    let _ = std::fs::remove_dir_all(&staging);
    if result.is_err() {
        let _ = std::fs::remove_file(file);
    }
    result?;
    println!("exported '{name}' to {} (OVA, OVF 1.0)", file.display());
    Ok(0)
}

fn export_staged(def: &VmDefinition, name: &str, staging: &Path, file: &Path) -> Result<()> {
    let stem = vm_name(name);
    let mut disks = Vec::new();
    for (i, d) in def.disks.iter().enumerate() {
        let opts = block::OpenOptions {
            read_only: true,
            format: d
                .format
                .as_ref()
                .map(|f| f.get_ref().parse::<block::Format>())
                .transpose()
                .map_err(|e| anyhow!("disk format: {e}"))?,
            allow_external_backing: d.allow_external_backing,
        };
        let mut img = block::open(d.path.get_ref(), &opts)
            .with_context(|| format!("disk {}", d.path.get_ref().display()))?;
        let vmdk = format!("{stem}-disk{:03}.vmdk", i + 1);
        let path = staging.join(&vmdk);
        let written = block::write_stream_optimized(img.as_mut(), &path)
            .with_context(|| format!("writing {vmdk}"))?;
        disks.push((vmdk, written, img.size()));
    }
    let nics = def
        .nics
        .iter()
        .map(|n| vbox_network(n.mode.get_ref()))
        .collect();
    let ovf_name = format!("{stem}.ovf");
    let text = ovf::render(&ovf::ExportSpec {
        name,
        cpus: u32::try_from(*def.cpus.get_ref())
            .map_err(|_| anyhow!("cpus {} is out of range", def.cpus.get_ref()))?,
        memory_mib: def.memory_bytes() >> 20,
        disks: disks.clone(),
        nics,
    });
    std::fs::write(staging.join(&ovf_name), &text)?;
    let mut mf = format!(
        "SHA256({ovf_name})= {}\n",
        sha256_hex(&mut text.as_bytes())?
    );
    for (vmdk, _, _) in &disks {
        let mut f = std::fs::File::open(staging.join(vmdk))?;
        mf.push_str(&format!("SHA256({vmdk})= {}\n", sha256_hex(&mut f)?));
    }
    let mf_name = format!("{stem}.mf");
    std::fs::write(staging.join(&mf_name), mf)?;
    let out = std::fs::File::create_new(file).with_context(|| format!("{}", file.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
    tar.mode(tar::HeaderMode::Deterministic);
    let mut order: Vec<PathBuf> = vec![ovf_name.into()];
    order.extend(disks.iter().map(|d| PathBuf::from(&d.0)));
    order.push(mf_name.into());
    for f in order {
        tar.append_path_with_name(staging.join(&f), &f)
            .with_context(|| format!("writing {}", file.display()))?;
    }
    tar.into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(())
}

fn sha256_hex(r: &mut impl Read) -> Result<String> {
    let mut h = Sha256::new();
    std::io::copy(r, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vessel_modes_become_virtualbox_networks() {
        for (mode, net) in [
            ("nat", "NAT"),
            ("natnet:x", "NAT"),
            ("hostonly:h", "HostOnly"),
            ("internal:i", "Internal"),
            ("bridged:e", "Bridged"),
            ("tap:t", "Bridged"),
        ] {
            assert_eq!(vbox_network(mode), net);
        }
    }
}
