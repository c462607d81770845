//! The OVF envelope (DMTF DSP0243, 1.x and 2.x): parsing what vessel maps (CPUs, memory,
//! disks, NICs) with a report of what it does not, and writing OVF 1.0 the way VirtualBox
//! writes it.
//!
//! The descriptor is hostile input: roxmltree refuses DTDs (so no entity expansion), the
//! text is bounded by the caller, and every number is checked. Elements and attributes are
//! matched by local name, so the OVF 1.x and 2.x namespaces (and `Item` / `StorageItem` /
//! `EthernetPortItem`) read the same.

use std::fmt::Write as _;

use anyhow::{anyhow, bail, Context, Result};

/// CIM ResourceType values (CIM_ResourceAllocationSettingData).
const RT_CPU: u32 = 3;
const RT_MEMORY: u32 = 4;
const RT_NIC: u32 = 10;
const RT_DISK: u32 = 17;
/// Most disks and NICs taken from one appliance.
const MAX_DEVICES: usize = 64;

/// A disk of the appliance: the file holding it and its virtual size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfDisk {
    /// File name inside the OVA (`References/File/@href`).
    pub href: String,
    /// Virtual size in bytes, when the DiskSection gives it.
    pub capacity: Option<u64>,
    /// The file's size in bytes, when References gives it (`ovf:size`).
    pub file_size: Option<u64>,
}

/// What vessel takes from a VirtualSystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appliance {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<OvfDisk>,
    /// The Connection (network name) of every NIC, in order.
    pub nics: Vec<String>,
    /// Hardware and sections vessel did not map, one line each.
    pub unmapped: Vec<String>,
}

fn attr<'a>(node: roxmltree::Node<'a, '_>, local: &str) -> Option<&'a str> {
    node.attributes()
        .find(|a| a.name() == local)
        .map(|a| a.value())
}

fn child_text<'a>(node: roxmltree::Node<'a, '_>, local: &str) -> Option<&'a str> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == local)
        .and_then(|c| c.text())
        .map(str::trim)
}

fn first<'a, 'i>(node: roxmltree::Node<'a, 'i>, local: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.descendants()
        .find(|c| c.is_element() && c.tag_name().name() == local)
}

/// Bytes per unit of a CIM programmatic unit: `byte`, `byte * 2^20`, `MegaBytes`, `KB`….
pub fn unit_bytes(units: &str) -> Result<u64> {
    let u: String = units
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let named = match u.as_str() {
        "byte" | "bytes" | "b" => Some(1),
        "kilobytes" | "kb" | "kib" => Some(1 << 10),
        "megabytes" | "mb" | "mib" => Some(1 << 20),
        "gigabytes" | "gb" | "gib" => Some(1 << 30),
        "terabytes" | "tb" | "tib" => Some(1 << 40),
        _ => None,
    };
    if let Some(n) = named {
        return Ok(n);
    }
    let exp = u
        .strip_prefix("byte*2^")
        .and_then(|e| e.parse::<u32>().ok())
        .filter(|e| *e <= 50)
        .ok_or_else(|| anyhow!("unsupported allocation units '{units}'"))?;
    Ok(1u64 << exp)
}

fn number(text: Option<&str>, what: &str) -> Result<u64> {
    let t = text.ok_or_else(|| anyhow!("{what} has no value"))?;
    t.parse()
        .map_err(|_| anyhow!("{what} '{t}' is not a whole number"))
}

/// Parse an OVF descriptor (the first VirtualSystem).
pub fn parse(text: &str) -> Result<Appliance> {
    let doc = roxmltree::Document::parse(text).context("the OVF descriptor is not valid XML")?;
    let env = doc.root_element();
    if env.tag_name().name() != "Envelope" {
        bail!(
            "the OVF descriptor's root is <{}>, not <Envelope>",
            env.tag_name().name()
        );
    }
    let mut files = std::collections::HashMap::new();
    if let Some(refs) = first(env, "References") {
        for f in refs.children().filter(|c| c.tag_name().name() == "File") {
            let id = attr(f, "id").ok_or_else(|| anyhow!("a References/File has no id"))?;
            let href = attr(f, "href").ok_or_else(|| anyhow!("File '{id}' has no href"))?;
            let size = match attr(f, "size") {
                Some(n) => Some(number(Some(n), &format!("File '{id}' size"))?),
                None => None,
            };
            files.insert(id.to_string(), (href.to_string(), size));
        }
    }
    let mut disks_by_id = std::collections::HashMap::new();
    if let Some(section) = first(env, "DiskSection") {
        for d in section.children().filter(|c| c.tag_name().name() == "Disk") {
            let id = attr(d, "diskId").ok_or_else(|| anyhow!("a Disk has no diskId"))?;
            let file = attr(d, "fileRef").ok_or_else(|| {
                anyhow!("Disk '{id}' has no fileRef (empty disks are not supported)")
            })?;
            let (href, file_size) = files.get(file).ok_or_else(|| {
                anyhow!("Disk '{id}' names file '{file}', which References does not list")
            })?;
            let capacity = match attr(d, "capacity") {
                Some(c) => {
                    let n = number(Some(c), &format!("Disk '{id}' capacity"))?;
                    let unit = unit_bytes(attr(d, "capacityAllocationUnits").unwrap_or("byte"))?;
                    Some(
                        n.checked_mul(unit)
                            .ok_or_else(|| anyhow!("Disk '{id}' capacity overflows"))?,
                    )
                }
                None => None,
            };
            disks_by_id.insert(
                id.to_string(),
                OvfDisk {
                    href: href.clone(),
                    capacity,
                    file_size: *file_size,
                },
            );
        }
    }
    let system = first(env, "VirtualSystem")
        .ok_or_else(|| anyhow!("the OVF descriptor has no VirtualSystem"))?;
    let hardware = first(system, "VirtualHardwareSection")
        .ok_or_else(|| anyhow!("the VirtualSystem has no VirtualHardwareSection"))?;
    let name = child_text(system, "Name")
        .or_else(|| attr(system, "id"))
        .unwrap_or("appliance")
        .to_string();
    let mut app = Appliance {
        name,
        cpus: 0,
        memory_mib: 0,
        disks: Vec::new(),
        nics: Vec::new(),
        unmapped: Vec::new(),
    };
    for item in hardware
        .children()
        .filter(|c| c.is_element() && c.tag_name().name().ends_with("Item"))
    {
        map_item(item, &disks_by_id, &mut app)?;
    }
    if app.cpus == 0 {
        bail!("the VirtualHardwareSection has no processor item (ResourceType 3)");
    }
    if app.memory_mib == 0 {
        bail!("the VirtualHardwareSection has no memory item (ResourceType 4)");
    }
    if app.disks.len() > MAX_DEVICES || app.nics.len() > MAX_DEVICES {
        bail!("more than {MAX_DEVICES} disks or NICs");
    }
    let systems = env
        .descendants()
        .filter(|n| n.tag_name().name() == "VirtualSystem")
        .count();
    if systems > 1 {
        app.unmapped.push(format!(
            "{} more VirtualSystems (only the first was imported)",
            systems - 1
        ));
    }
    if first(env, "DeploymentOptionSection").is_some() {
        app.unmapped
            .push("DeploymentOptionSection (the default configuration was used)".into());
    }
    Ok(app)
}

fn map_item(
    item: roxmltree::Node<'_, '_>,
    disks: &std::collections::HashMap<String, OvfDisk>,
    app: &mut Appliance,
) -> Result<()> {
    let label = child_text(item, "ElementName")
        .unwrap_or("unnamed item")
        .to_string();
    let rt = number(
        child_text(item, "ResourceType"),
        &format!("'{label}' ResourceType"),
    )?;
    match u32::try_from(rt).unwrap_or(u32::MAX) {
        RT_CPU => {
            let n = number(
                child_text(item, "VirtualQuantity"),
                "processor VirtualQuantity",
            )?;
            app.cpus = u32::try_from(n)
                .ok()
                .filter(|n| (1..=255).contains(n))
                .ok_or_else(|| anyhow!("{n} processors: vessel runs 1 to 255"))?;
        }
        RT_MEMORY => {
            let n = number(
                child_text(item, "VirtualQuantity"),
                "memory VirtualQuantity",
            )?;
            let unit = unit_bytes(child_text(item, "AllocationUnits").unwrap_or("byte * 2^20"))?;
            let bytes = n
                .checked_mul(unit)
                .filter(|b| *b >= 1 << 20 && *b <= 1 << 42)
                .ok_or_else(|| anyhow!("memory of {n} × {unit} bytes is out of range"))?;
            app.memory_mib = bytes.div_ceil(1 << 20);
        }
        RT_DISK => {
            let host = child_text(item, "HostResource")
                .ok_or_else(|| anyhow!("disk item '{label}' has no HostResource"))?;
            let id = host
                .strip_prefix("ovf:/disk/")
                .or_else(|| host.strip_prefix("/disk/"))
                .ok_or_else(|| anyhow!("disk item '{label}' names '{host}', not ovf:/disk/ID"))?;
            let disk = disks.get(id).ok_or_else(|| {
                anyhow!("disk item '{label}' names disk '{id}', which DiskSection does not list")
            })?;
            app.disks.push(disk.clone());
        }
        RT_NIC => {
            let conn = child_text(item, "Connection").unwrap_or("").to_string();
            app.nics.push(conn);
        }
        5 | 6 | 20 => app.unmapped.push(format!(
            "{label} (ResourceType {rt}): disk controller; vessel attaches disks as virtio-blk"
        )),
        other => app.unmapped.push(format!("{label} (ResourceType {other})")),
    }
    Ok(())
}

/// What [`render`] writes.
pub struct ExportSpec<'a> {
    pub name: &'a str,
    pub cpus: u32,
    pub memory_mib: u64,
    /// File name, file size and virtual size of each disk.
    pub disks: Vec<(String, u64, u64)>,
    /// VirtualBox network names (`NAT`, `Bridged`, `HostOnly`, `Internal`), one per NIC.
    pub nics: Vec<&'static str>,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An OVF 1.0 envelope laid out as VirtualBox writes it.
pub fn render(spec: &ExportSpec<'_>) -> String {
    let mut s = String::new();
    s.push_str(concat!(
        "<?xml version=\"1.0\"?>\n",
        "<Envelope ovf:version=\"1.0\" xml:lang=\"en-US\" ",
        "xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" ",
        "xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\" ",
        "xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\" ",
        "xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\" ",
        "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n  <References>\n"
    ));
    for (i, (file, size, _)) in spec.disks.iter().enumerate() {
        let _ = writeln!(
            s,
            "    <File ovf:id=\"file{}\" ovf:href=\"{}\" ovf:size=\"{size}\"/>",
            i + 1,
            xml_escape(file)
        );
    }
    s.push_str("  </References>\n  <DiskSection>\n    <Info>List of the virtual disks used in the package</Info>\n");
    for (i, (_, _, capacity)) in spec.disks.iter().enumerate() {
        let _ = writeln!(
            s,
            "    <Disk ovf:capacity=\"{capacity}\" ovf:diskId=\"vmdisk{n}\" ovf:fileRef=\"file{n}\" ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>",
            n = i + 1
        );
    }
    s.push_str("  </DiskSection>\n  <NetworkSection>\n    <Info>Logical networks used in the package</Info>\n");
    let mut networks: Vec<&str> = spec.nics.clone();
    networks.sort_unstable();
    networks.dedup();
    for n in networks {
        let _ = writeln!(
            s,
            "    <Network ovf:name=\"{n}\">\n      <Description>Logical network used by this appliance.</Description>\n    </Network>"
        );
    }
    let name = xml_escape(spec.name);
    let _ = write!(
        s,
        "  </NetworkSection>\n  <VirtualSystem ovf:id=\"{name}\">\n    <Info>A virtual machine</Info>\n    <Name>{name}</Name>\n    <OperatingSystemSection ovf:id=\"96\">\n      <Info>The kind of installed guest operating system</Info>\n      <Description>Debian_64</Description>\n    </OperatingSystemSection>\n    <VirtualHardwareSection>\n      <Info>Virtual hardware requirements for a virtual machine</Info>\n      <System>\n        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n        <vssd:InstanceID>0</vssd:InstanceID>\n        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>\n        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>\n      </System>\n"
    );
    let mut id = 0;
    let mut item = |s: &mut String, body: String| {
        id += 1;
        let _ = write!(
            s,
            "      <Item>\n{body}        <rasd:InstanceID>{id}</rasd:InstanceID>\n      </Item>\n"
        );
        id
    };
    item(&mut s, format!("        <rasd:Caption>{c} virtual CPU</rasd:Caption>\n        <rasd:Description>Number of virtual CPUs</rasd:Description>\n        <rasd:ElementName>{c} virtual CPU</rasd:ElementName>\n        <rasd:ResourceType>3</rasd:ResourceType>\n        <rasd:VirtualQuantity>{c}</rasd:VirtualQuantity>\n", c = spec.cpus));
    item(&mut s, format!("        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>\n        <rasd:Caption>{m} MB of memory</rasd:Caption>\n        <rasd:Description>Memory Size</rasd:Description>\n        <rasd:ElementName>{m} MB of memory</rasd:ElementName>\n        <rasd:ResourceType>4</rasd:ResourceType>\n        <rasd:VirtualQuantity>{m}</rasd:VirtualQuantity>\n", m = spec.memory_mib));
    let sata = item(&mut s, "        <rasd:Caption>sataController0</rasd:Caption>\n        <rasd:Description>SATA Controller</rasd:Description>\n        <rasd:ElementName>sataController0</rasd:ElementName>\n        <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>\n        <rasd:ResourceType>20</rasd:ResourceType>\n        <rasd:Address>0</rasd:Address>\n".into());
    for (i, nic) in spec.nics.iter().enumerate() {
        item(&mut s, format!("        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>\n        <rasd:Caption>Ethernet adapter on '{nic}'</rasd:Caption>\n        <rasd:Connection>{nic}</rasd:Connection>\n        <rasd:ElementName>Ethernet adapter on '{nic}'</rasd:ElementName>\n        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>\n        <rasd:ResourceType>10</rasd:ResourceType>\n        <rasd:AddressOnParent>{i}</rasd:AddressOnParent>\n"));
    }
    for i in 0..spec.disks.len() {
        item(&mut s, format!("        <rasd:AddressOnParent>{i}</rasd:AddressOnParent>\n        <rasd:Caption>disk{n}</rasd:Caption>\n        <rasd:Description>Disk Image</rasd:Description>\n        <rasd:ElementName>disk{n}</rasd:ElementName>\n        <rasd:HostResource>/disk/vmdisk{n}</rasd:HostResource>\n        <rasd:Parent>{sata}</rasd:Parent>\n        <rasd:ResourceType>17</rasd:ResourceType>\n", n = i + 1));
    }
    s.push_str("    </VirtualHardwareSection>\n  </VirtualSystem>\n</Envelope>\n");
    s
}

#[cfg(test)]
mod tests;
