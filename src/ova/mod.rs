//! OVA appliances: `vessel import FILE.ova` (OVF 1.x/2.x; disks converted to qcow2, the
//! kernel found inside the first disk, NICs mapped to vessel modes, a report of what was
//! not mapped) and `vessel export NAME --format ova FILE.ova` (OVF 1.0 as VirtualBox
//! writes it, streamOptimized VMDKs, a SHA256 manifest). docs/appliances.md.

mod archive;
mod ovf;

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::state::{self, StateDir};
use crate::vmdef::VmDefinition;

/// VirtualBox's default host-only and internal network names.
const VBOX_HOSTONLY: &str = "vboxnet0";
const VBOX_INTERNAL: &str = "intnet";

/// Whether `path` is an OVA: a `.ova` name, or a tar whose first entry is a `.ovf`.
pub fn looks_like_ova(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ova"))
    {
        return true;
    }
    let mut head = [0u8; 512];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    if f.read_exact(&mut head).is_err() || &head[257..262] != b"ustar" {
        return false;
    }
    let end = head[..100].iter().position(|&b| b == 0).unwrap_or(100);
    head[..end].ends_with(b".ovf")
}

/// The vessel NIC mode for an OVF Connection (a network name), and a note when the
/// mapping is a choice vessel made.
fn nic_mode(connection: &str, bridge: Option<&str>) -> (String, Option<String>) {
    match connection.to_ascii_lowercase().as_str() {
        "nat" => ("nat".into(), None),
        "hostonly" | "host-only" => (
            format!("hostonly:{VBOX_HOSTONLY}"),
            Some(format!(
                "host-only network mapped to hostonly:{VBOX_HOSTONLY}"
            )),
        ),
        "internal" => (
            format!("internal:{VBOX_INTERNAL}"),
            Some(format!(
                "internal network mapped to internal:{VBOX_INTERNAL}"
            )),
        ),
        "bridged" => match bridge {
            Some(iface) => (format!("bridged:{iface}"), None),
            None => (
                "nat".into(),
                Some("bridged network mapped to nat (give --bridge IFACE to bridge)".into()),
            ),
        },
        "" => ("nat".into(), Some("no Connection: mapped to nat".into())),
        _ if connection
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && connection.len() <= 32 =>
        {
            (
                format!("internal:{connection}"),
                Some(format!(
                    "network '{connection}' mapped to internal:{connection}"
                )),
            )
        }
        _ => (
            "nat".into(),
            Some(format!("network '{connection}' mapped to nat")),
        ),
    }
}

/// The VirtualBox network name for a vessel NIC mode.
fn vbox_network(mode: &str) -> &'static str {
    match mode.split_once(':').map_or(mode, |(k, _)| k) {
        "hostonly" => "HostOnly",
        "internal" => "Internal",
        "bridged" | "tap" => "Bridged",
        _ => "NAT",
    }
}

/// `vessel import FILE.ova [--name NAME] [--bridge IFACE]`.
pub fn import(
    state: &StateDir,
    file: &Path,
    name: Option<&str>,
    bridge: Option<&str>,
) -> Result<i32> {
    let staging = state
        .root
        .join(format!(".ova-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("{}", staging.display()))?;
    let result = import_staged(state, file, &staging, name, bridge);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    let (name, report) = result.with_context(|| format!("importing {}", file.display()))?;
    println!("imported '{name}' from {}", file.display());
    for line in report {
        println!("  not mapped: {line}");
    }
    Ok(0)
}

fn import_staged(
    state: &StateDir,
    file: &Path,
    staging: &Path,
    name: Option<&str>,
    bridge: Option<&str>,
) -> Result<(String, Vec<String>)> {
    let unpacked = archive::unpack(file, staging)?;
    let mf: Vec<&String> = unpacked
        .files
        .keys()
        .filter(|f| f.ends_with(".mf"))
        .collect();
    let mut report = Vec::new();
    match mf.as_slice() {
        [] => report.push("the OVA has no .mf manifest: its files were not checked".into()),
        [mf] => {
            let path = staging.join(mf);
            let mut text = String::new();
            std::fs::File::open(&path)?
                .take(1 << 20)
                .read_to_string(&mut text)
                .with_context(|| format!("{mf} is not UTF-8 text"))?;
            archive::check_manifest(&text, &unpacked.ovf, &unpacked.files, mf)?;
        }
        _ => bail!("the OVA holds more than one .mf manifest"),
    }
    let app = ovf::parse(&unpacked.ovf.0).with_context(|| unpacked.ovf.1.clone())?;
    report.extend(app.unmapped.iter().cloned());
    if app.disks.is_empty() {
        bail!("the appliance has no disks: an OVA carries no kernel, vessel boots the Linux on its first disk");
    }
    let mut disks = Vec::new();
    for (i, d) in app.disks.iter().enumerate() {
        if !unpacked.files.contains_key(&d.href) || !archive::plain_name(&d.href) {
            bail!(
                "the OVF names disk file '{}', which the OVA does not hold",
                d.href
            );
        }
        let src = staging.join(&d.href);
        let dst = staging.join(format!("disk{i}.qcow2"));
        let size = convert_disk(&src, &dst)?;
        if d.capacity.is_some_and(|c| c != size) {
            report.push(format!(
                "disk '{}': DiskSection capacity {} differs from the image's {size} bytes (the image's is used)",
                d.href,
                d.capacity.unwrap_or(0)
            ));
        }
        disks.push(dst);
    }
    for f in unpacked.files.keys() {
        let _ = std::fs::remove_file(staging.join(f));
        if !f.ends_with(".mf") && !f.ends_with(".cert") && !app.disks.iter().any(|d| d.href == *f) {
            report.push(format!("file '{f}' is not used by the OVF and was dropped"));
        }
    }
    let boot = staging.join("boot");
    std::fs::create_dir_all(&boot)?;
    let found = crate::image_boot::extract(&disks[0], block::Format::Qcow2, &boot).map_err(|e| {
        anyhow!("an OVA carries no kernel and its first disk holds no Linux vessel can boot directly: {e}")
    })?;
    let name = name.map_or_else(|| vm_name(&app.name), str::to_string);
    let vm = state.vm(&name)?;
    if vm.exists() {
        return Err(crate::exit::usage(format!(
            "a VM named '{name}' already exists (use --name)"
        )));
    }
    let mut nics = Vec::new();
    for (i, conn) in app.nics.iter().enumerate() {
        let (mode, note) = nic_mode(conn, bridge);
        report.extend(note.map(|n| format!("NIC {i}: {n}")));
        nics.push(mode);
    }
    let text = definition(&name, &app, &found, &nics, disks.len());
    let def = VmDefinition::parse(Path::new(state::DEFINITION), &text)
        .map_err(|e| anyhow!("the VM definition made from the OVF: {e}"))?;
    std::fs::write(staging.join(state::DEFINITION), &text)?;
    drop(def);
    std::fs::rename(staging, &vm.dir)
        .with_context(|| format!("moving into {}", vm.dir.display()))?;
    let mut def = VmDefinition::load(&vm.path(state::DEFINITION))?;
    def.resolve_paths(&vm.dir);
    std::fs::write(vm.path(state::DEFINITION), toml::to_string_pretty(&def)?)?;
    Ok((name, report))
}

/// A VM name from an appliance name: letters, digits, `-`, `_` and `.` kept.
fn vm_name(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    if n.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        n
    } else {
        format!("vm{n}")
    }
}

/// The definition text, with paths relative to the VM directory.
fn definition(
    name: &str,
    app: &ovf::Appliance,
    boot: &images::BootInfo,
    nics: &[String],
    disks: usize,
) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let cmdline = crate::image_boot::vm_cmdline(&boot.cmdline, crate::image_boot::kvm_is_pvm(), "");
    let mut t = format!(
        "name = {}\ncpus = {}\nmemory = \"{}M\"\n\n[boot]\nkernel = {}\n",
        q(name),
        app.cpus,
        app.memory_mib,
        q(&format!("boot/{}", boot.kernel))
    );
    if let Some(i) = &boot.initrd {
        t.push_str(&format!("initrd = {}\n", q(&format!("boot/{i}"))));
    }
    t.push_str(&format!("cmdline = {}\n", q(&cmdline)));
    for i in 0..disks {
        t.push_str(&format!(
            "\n[[disk]]\npath = \"disk{i}.qcow2\"\nformat = \"qcow2\"\n"
        ));
    }
    for m in nics {
        t.push_str(&format!("\n[[nic]]\nmode = {}\n", q(m)));
    }
    t
}

/// Convert an OVA's disk (any format vessel reads, one file, no backing) to qcow2.
fn convert_disk(src: &Path, dst: &Path) -> Result<u64> {
    let format = block::detect(src).with_context(|| format!("disk {}", src.display()))?;
    let opts = block::OpenOptions {
        read_only: true,
        format: Some(format),
        allow_external_backing: false,
    };
    let img = block::open(src, &opts).with_context(|| format!("disk {}", src.display()))?;
    if img.backing().is_some() || img.files().len() != 1 {
        bail!(
            "disk {} names other files (a backing file or extents); refused",
            src.display()
        );
    }
    drop(img);
    crate::disk_cli::convert::convert(src, dst, block::Format::Qcow2, &opts, None)
        .with_context(|| format!("converting {} to qcow2", src.display()))
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
        cpus: u32::try_from(*def.cpus.get_ref()).unwrap_or(1),
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
    fn nic_modes_map_both_ways() {
        assert_eq!(nic_mode("NAT", None).0, "nat");
        assert_eq!(nic_mode("HostOnly", None).0, "hostonly:vboxnet0");
        assert_eq!(nic_mode("Internal", None).0, "internal:intnet");
        assert_eq!(
            nic_mode("Bridged", Some("eth0")),
            ("bridged:eth0".into(), None)
        );
        let (m, note) = nic_mode("Bridged", None);
        assert_eq!(m, "nat");
        assert!(note.unwrap().contains("--bridge"));
        assert_eq!(nic_mode("lab", None).0, "internal:lab");
        assert_eq!(nic_mode("a b/c", None).0, "nat");
        for (mode, net) in [
            ("nat", "NAT"),
            ("natnet:x", "NAT"),
            ("hostonly:h", "HostOnly"),
            ("internal:i", "Internal"),
            ("bridged:e", "Bridged"),
        ] {
            assert_eq!(vbox_network(mode), net);
        }
        assert_eq!(vm_name("My VM (1)"), "My-VM--1-");
        assert_eq!(vm_name("-x"), "vm-x");
    }
}
