//! The VMDK text descriptor: header keys, extent lines and the disk database.
//!
//! Descriptors are untrusted: the text is bounded in size, line length and extent count,
//! and every extent line is checked.

use std::fmt::Write as _;

/// Largest descriptor we parse (qemu reads at most 1 MiB too).
pub(crate) const MAX_DESCRIPTOR: usize = 1 << 20;
const MAX_LINE: usize = 4096;
const MAX_EXTENTS: usize = 4096;

/// How an extent stores its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExtentKind {
    Sparse,
    Flat,
    Zero,
}

/// One extent line: `RW 2097152 SPARSE "disk.vmdk"` or `RW 2048 FLAT "disk-flat.vmdk" 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtentLine {
    pub writable: bool,
    pub sectors: u64,
    pub kind: ExtentKind,
    pub file: String,
    /// Start of the data in the file, in sectors (flat extents).
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default)]
pub(crate) struct Descriptor {
    pub create_type: String,
    pub cid: u32,
    pub parent_cid: u32,
    pub parent_hint: Option<String>,
    pub extents: Vec<ExtentLine>,
}

/// Strip surrounding quotes of a descriptor value.
fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

fn parse_extent(line: &str) -> Result<ExtentLine, String> {
    // The file name is quoted and may contain spaces: split around the quotes.
    let (head, rest) = line
        .split_once('"')
        .ok_or("extent line without a quoted file name")?;
    let (file, tail) = rest
        .split_once('"')
        .ok_or("unterminated file name in extent line")?;
    let mut words = head.split_whitespace();
    let access = words.next().ok_or("empty extent line")?;
    let writable = match access {
        "RW" => true,
        "RDONLY" | "NOACCESS" => false,
        other => return Err(format!("unknown extent access \"{other}\"")),
    };
    let sectors: u64 = words
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("extent size is not a number")?;
    let kind = match words.next().ok_or("extent line without a type")? {
        "SPARSE" => ExtentKind::Sparse,
        "FLAT" | "VMFS" => ExtentKind::Flat,
        "ZERO" => ExtentKind::Zero,
        other => return Err(format!("unsupported extent type {other}")),
    };
    if words.next().is_some() {
        return Err("unexpected words in extent line".into());
    }
    if file.is_empty() || file.contains('\0') {
        return Err("bad extent file name".into());
    }
    let offset = match tail.split_whitespace().next() {
        None => 0,
        Some(o) => o
            .parse()
            .map_err(|_| format!("bad extent offset \"{o}\""))?,
    };
    Ok(ExtentLine {
        writable,
        sectors,
        kind,
        file: file.to_string(),
        offset,
    })
}

impl Descriptor {
    /// Parse descriptor text (NUL padding at the end is ignored).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Descriptor, String> {
        if bytes.len() > MAX_DESCRIPTOR {
            return Err(format!("descriptor of {} bytes is too large", bytes.len()));
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let text =
            std::str::from_utf8(&bytes[..end]).map_err(|_| "descriptor is not UTF-8 text")?;
        let mut d = Descriptor {
            parent_cid: u32::MAX,
            ..Default::default()
        };
        let mut seen_header = false;
        for (n, line) in text.lines().enumerate() {
            if line.len() > MAX_LINE {
                return Err(format!(
                    "descriptor line {} is longer than {MAX_LINE} bytes",
                    n + 1
                ));
            }
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                seen_header |= line.starts_with("# Disk DescriptorFile");
                continue;
            }
            if line.starts_with("RW ")
                || line.starts_with("RDONLY ")
                || line.starts_with("NOACCESS ")
            {
                if d.extents.len() >= MAX_EXTENTS {
                    return Err(format!("more than {MAX_EXTENTS} extents"));
                }
                let e = parse_extent(line).map_err(|e| format!("line {}: {e}", n + 1))?;
                d.extents.push(e);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: not a key = value pair", n + 1));
            };
            let value = unquote(value);
            match key.trim() {
                "createType" => d.create_type = value.to_string(),
                "CID" => {
                    d.cid = u32::from_str_radix(value, 16)
                        .map_err(|_| format!("bad CID \"{value}\""))?
                }
                "parentCID" => {
                    d.parent_cid = u32::from_str_radix(value, 16)
                        .map_err(|_| format!("bad parentCID \"{value}\""))?
                }
                "parentFileNameHint" => d.parent_hint = Some(value.to_string()),
                _ => {}
            }
        }
        if !seen_header && d.create_type.is_empty() {
            return Err("not a VMDK descriptor".into());
        }
        if d.extents.is_empty() {
            return Err("descriptor has no extents".into());
        }
        Ok(d)
    }

    /// Descriptor text in the layout qemu and VMware write.
    pub(crate) fn render(&self, sectors: u64) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Disk DescriptorFile\nversion=1\nCID={:08x}\nparentCID={:08x}",
            self.cid, self.parent_cid
        );
        let _ = writeln!(s, "createType=\"{}\"", self.create_type);
        if let Some(hint) = &self.parent_hint {
            let _ = writeln!(s, "parentFileNameHint=\"{hint}\"");
        }
        s.push_str("\n# Extent description\n");
        for e in &self.extents {
            let kind = match e.kind {
                ExtentKind::Sparse => "SPARSE",
                ExtentKind::Flat => "FLAT",
                ExtentKind::Zero => "ZERO",
            };
            let access = if e.writable { "RW" } else { "RDONLY" };
            let _ = write!(s, "{access} {} {kind} \"{}\"", e.sectors, e.file);
            if e.kind == ExtentKind::Flat {
                let _ = write!(s, " {}", e.offset);
            }
            s.push('\n');
        }
        let cyls = (sectors / (16 * 63)).min(16383);
        let _ = write!(
            s,
            "\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"{cyls}\"\nddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\nddb.adapterType = \"ide\"\n"
        );
        s
    }
}

/// `text` (a descriptor, possibly NUL-padded) with its `CID=` line set to `cid`, padded
/// back to its original length when the result is not longer. `None` without a CID line.
pub(crate) fn replace_cid(text: &[u8], cid: u32) -> Option<Vec<u8>> {
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let body = std::str::from_utf8(&text[..end]).ok()?;
    let mut found = false;
    let mut out = String::with_capacity(body.len());
    for line in body.split_inclusive('\n') {
        if !found && line.trim_start().starts_with("CID=") {
            found = true;
            out.push_str(&format!("CID={cid:08x}\n"));
        } else {
            out.push_str(line);
        }
    }
    let mut bytes = out.into_bytes();
    if bytes.len() < text.len() && end < text.len() {
        bytes.resize(text.len(), 0);
    }
    found.then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_style_descriptor() {
        let text = b"# Disk DescriptorFile\nversion=1\nCID=12ab34cd\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\n\n# Extent description\nRW 4192256 FLAT \"my disk-f001.vmdk\" 0\nRDONLY 100 ZERO \"x\"\n\nddb.adapterType = \"ide\"\n\0\0\0";
        let d = Descriptor::parse(text).unwrap();
        assert_eq!(d.cid, 0x12ab_34cd);
        assert_eq!(d.create_type, "twoGbMaxExtentFlat");
        assert_eq!(d.extents.len(), 2);
        assert_eq!(d.extents[0].file, "my disk-f001.vmdk");
        assert_eq!(d.extents[0].kind, ExtentKind::Flat);
        assert!(!d.extents[1].writable);
        let again = Descriptor::parse(d.render(4192356).as_bytes()).unwrap();
        assert_eq!(again.extents, d.extents);
    }

    #[test]
    fn cid_is_replaced_in_place() {
        let text = b"# Disk DescriptorFile\nversion=1\nCID=0000abcd\nparentCID=ffffffff\n\0\0\0\0";
        let new = replace_cid(text, 0x1234_5678).unwrap();
        assert_eq!(new.len(), text.len());
        assert!(std::str::from_utf8(&new)
            .unwrap()
            .contains("CID=12345678\nparentCID=ffffffff"));
        assert!(replace_cid(b"# Disk DescriptorFile\n", 1).is_none());
    }

    #[test]
    fn rejects_bad_lines() {
        let bad: [&[u8]; 5] = [
            b"# Disk DescriptorFile\nRW x SPARSE \"a\"\n",
            b"# Disk DescriptorFile\nRW 10 SESPARSE \"a\"\n",
            b"# Disk DescriptorFile\nRW 10 FLAT \"a\n",
            b"# Disk DescriptorFile\ncreateType=\"x\"\n",
            b"\xff\xfe",
        ];
        for b in bad {
            assert!(
                Descriptor::parse(b).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        let long = format!(
            "# Disk DescriptorFile\n#{}\nRW 1 ZERO \"a\"\n",
            "x".repeat(MAX_LINE + 1)
        );
        assert!(Descriptor::parse(long.as_bytes())
            .unwrap_err()
            .contains("longer"));
    }
}
