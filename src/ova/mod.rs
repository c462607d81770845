//! OVA appliances: `vessel import FILE.ova` (OVF 1.x/2.x; disks converted to qcow2, the
//! kernel found inside the first disk, NICs mapped to vessel modes, a report of what was
//! not mapped) and `vessel export NAME --format ova FILE.ova` (OVF 1.0 as VirtualBox
//! writes it, streamOptimized VMDKs, a SHA256 manifest). docs/appliances.md.

mod archive;
mod export;
mod ovf;

pub use export::export;

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

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

/// Checks the OVA's `.mf` manifest against the unpacked files, if it has one; what the
/// import report says about it.
fn verify_manifest(unpacked: &archive::Unpacked, staging: &Path) -> Result<Vec<String>> {
    let mut report = Vec::new();
    let mf: Vec<&String> = unpacked
        .files
        .keys()
        .filter(|f| f.ends_with(".mf"))
        .collect();
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
    Ok(report)
}

/// Each disk of `app` converted to `disk{i}.qcow2` in `staging`, checked against what
/// the OVF says of it; differences that do not stop the import go to `report`.
fn convert_disks(
    app: &ovf::Appliance,
    unpacked: &archive::Unpacked,
    staging: &Path,
    report: &mut Vec<String>,
) -> Result<Vec<std::path::PathBuf>> {
    let mut disks = Vec::new();
    for (i, d) in app.disks.iter().enumerate() {
        let Some(held) = unpacked
            .files
            .get(&d.href)
            .filter(|_| archive::plain_name(&d.href))
        else {
            bail!(
                "the OVF names disk file '{}', which the OVA does not hold",
                d.href
            );
        };
        if d.file_size.is_some_and(|s| s != held.len) {
            bail!(
                "disk file '{}' has {} bytes, but the OVF's References say {}; refused",
                d.href,
                held.len,
                d.file_size.unwrap_or(0)
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
    Ok(disks)
}

fn import_staged(
    state: &StateDir,
    file: &Path,
    staging: &Path,
    name: Option<&str>,
    bridge: Option<&str>,
) -> Result<(String, Vec<String>)> {
    let unpacked = archive::unpack(file, staging)?;
    let mut report = verify_manifest(&unpacked, staging)?;
    let app = ovf::parse(&unpacked.ovf.0).with_context(|| unpacked.ovf.1.clone())?;
    report.extend(app.unmapped.iter().cloned());
    if app.disks.is_empty() {
        bail!("the appliance has no disks: an OVA carries no kernel, vessel boots the Linux on its first disk");
    }
    let disks = convert_disks(&app, &unpacked, staging, &mut report)?;
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
    let mut def = VmDefinition::parse(Path::new(state::DEFINITION), &text)
        .map_err(|e| anyhow!("the VM definition made from the OVF: {e}"))?;
    // Paths as they will be once the staging directory is the VM's: nothing can fail
    // after the rename.
    def.resolve_paths(&vm.dir);
    std::fs::write(
        staging.join(state::DEFINITION),
        toml::to_string_pretty(&def)?,
    )?;
    std::fs::rename(staging, &vm.dir)
        .with_context(|| format!("moving into {}", vm.dir.display()))?;
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
        assert_eq!(vm_name("My VM (1)"), "My-VM--1-");
        assert_eq!(vm_name("-x"), "vm-x");
    }
}
