//! The qcow2 header and its extensions: parsing with validation, and serialization.

use std::path::Path;

use crate::{Error, Format, Result};

pub(crate) const MAGIC: &[u8; 4] = b"QFI\xfb";
/// Size of the fixed v2 header; v3 adds fields up to `header_length`.
pub(crate) const V2_HEADER_LEN: usize = 72;
pub(crate) const V3_HEADER_LEN: usize = 104;

pub(crate) const MIN_CLUSTER_BITS: u32 = 9;
pub(crate) const MAX_CLUSTER_BITS: u32 = 21;
/// qemu's bounds on the L1 and refcount tables.
pub(crate) const MAX_L1_BYTES: u64 = 32 << 20;
pub(crate) const MAX_REFTABLE_BYTES: u64 = 8 << 20;
const MAX_SNAPSHOTS: u32 = 65536;
/// Largest virtual size accepted (2^61 bytes, far beyond any real disk).
pub(crate) const MAX_SIZE: u64 = 1 << 61;

/// Incompatible feature bits.
pub(crate) const INCOMPAT_DIRTY: u64 = 1 << 0;
pub(crate) const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_KNOWN: u64 = INCOMPAT_DIRTY | INCOMPAT_CORRUPT;

/// Byte offsets of header fields that the driver updates in place.
pub(crate) const OFF_SIZE: u64 = 24;
pub(crate) const OFF_L1: u64 = 36; // l1_size u32, then l1_table_offset u64
pub(crate) const OFF_REFTABLE: u64 = 48; // refcount_table_offset u64, then clusters u32
pub(crate) const OFF_INCOMPAT: u64 = 72;
pub(crate) const OFF_AUTOCLEAR: u64 = 88;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;

/// A parsed, validated qcow2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible: u64,
    pub compatible: u64,
    pub autoclear: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        format: Format::Qcow2,
        reason: reason.into(),
    }
}

pub(crate) fn unsupported(path: &Path, feature: impl Into<String>) -> Error {
    Error::Unsupported {
        path: path.to_path_buf(),
        format: Format::Qcow2,
        feature: feature.into(),
    }
}

/// Number of L1 entries needed for a disk of `size` bytes.
pub(crate) fn l1_entries_for(size: u64, cluster_bits: u32) -> u64 {
    let l2_span_bits = cluster_bits + (cluster_bits - 3);
    size.div_ceil(1u64 << l2_span_bits)
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Cluster bits read from the first bytes of a file, to know how much to read next.
    pub fn peek_cluster_bits(first: &[u8]) -> Option<u32> {
        (first.len() >= 24 && &first[..4] == MAGIC).then(|| be32(first, 20))
    }

    /// Parse the header from `cluster0` (the first cluster of the file, or the whole file
    /// if shorter), for the image at `path` whose file is `file_len` bytes long.
    pub fn parse(path: &Path, cluster0: &[u8]) -> Result<Header> {
        let c = cluster0;
        if c.len() < V2_HEADER_LEN || &c[..4] != MAGIC {
            return Err(corrupt(path, "not a qcow2 header (too short or bad magic)"));
        }
        let version = be32(c, 4);
        if version == 1 {
            return Err(unsupported(path, "qcow version 1"));
        }
        if version != 2 && version != 3 {
            return Err(unsupported(path, format!("qcow2 version {version}")));
        }
        let cluster_bits = be32(c, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(corrupt(
                path,
                format!("cluster_bits {cluster_bits} out of range 9..=21"),
            ));
        }
        let cs = 1u64 << cluster_bits;
        if (c.len() as u64) < cs.min(V3_HEADER_LEN as u64) && version == 3 {
            return Err(corrupt(path, "file too short for a v3 header"));
        }
        let mut h = Header {
            version,
            cluster_bits,
            size: be64(c, 24),
            l1_size: be32(c, 36),
            l1_table_offset: be64(c, 40),
            refcount_table_offset: be64(c, 48),
            refcount_table_clusters: be32(c, 56),
            nb_snapshots: be32(c, 60),
            snapshots_offset: be64(c, 64),
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN as u32,
            backing_file: None,
            backing_format: None,
        };
        let crypt_method = be32(c, 32);
        if version == 3 {
            h.incompatible = be64(c, 72);
            h.compatible = be64(c, 80);
            h.autoclear = be64(c, 88);
            h.refcount_order = be32(c, 96);
            h.header_length = be32(c, 100);
            if (h.header_length as usize) < V3_HEADER_LEN
                || h.header_length as u64 > cs
                || h.header_length as usize > c.len()
            {
                return Err(corrupt(
                    path,
                    format!("header_length {} invalid", h.header_length),
                ));
            }
            if h.refcount_order > 6 {
                return Err(corrupt(
                    path,
                    format!("refcount_order {}", h.refcount_order),
                ));
            }
        }
        let ext_start = h.header_length as usize;
        let feature_names = h.parse_extensions(path, c, ext_start)?;
        h.check_features(path, c, &feature_names)?;
        if crypt_method != 0 {
            return Err(unsupported(path, "encryption"));
        }
        h.validate_layout(path)?;
        h.parse_backing_name(path, c)?;
        Ok(h)
    }

    /// Walk the header extensions; returns the feature name table entries.
    fn parse_extensions(
        &mut self,
        path: &Path,
        c: &[u8],
        start: usize,
    ) -> Result<Vec<(u8, u8, String)>> {
        let mut names = Vec::new();
        let mut at = start;
        // Extensions end at the end marker or the end of the first cluster.
        while at + 8 <= c.len() {
            let kind = be32(c, at);
            let len = be32(c, at + 4) as usize;
            at += 8;
            if kind == EXT_END {
                break;
            }
            if len > c.len() - at {
                return Err(corrupt(
                    path,
                    "header extension runs past the first cluster",
                ));
            }
            let data = &c[at..at + len];
            match kind {
                EXT_BACKING_FORMAT => {
                    if len > 64 {
                        return Err(corrupt(path, "backing format name too long"));
                    }
                    self.backing_format = Some(String::from_utf8_lossy(data).into_owned());
                }
                EXT_FEATURE_TABLE => {
                    for entry in data.chunks_exact(48).take(192) {
                        let name = &entry[2..];
                        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                        names.push((
                            entry[0],
                            entry[1],
                            String::from_utf8_lossy(&name[..end]).into_owned(),
                        ));
                    }
                }
                _ => {}
            }
            at += len.div_ceil(8) * 8;
        }
        Ok(names)
    }

    fn check_features(&self, path: &Path, _c: &[u8], names: &[(u8, u8, String)]) -> Result<()> {
        let unknown = self.incompatible & !INCOMPAT_KNOWN;
        if unknown == 0 {
            return Ok(());
        }
        let mut listed = Vec::new();
        for bit in 0..64u8 {
            if unknown & (1 << bit) == 0 {
                continue;
            }
            let known_name = match bit {
                2 => Some("external data file"),
                3 => Some("non-zlib compression type"),
                4 => Some("extended L2 entries"),
                _ => None,
            };
            let name = names
                .iter()
                .find(|(kind, b, _)| *kind == 0 && *b == bit)
                .map(|(_, _, n)| n.as_str())
                .or(known_name)
                .unwrap_or("unknown");
            listed.push(format!("bit {bit} ({name})"));
        }
        Err(unsupported(
            path,
            format!("incompatible features {}", listed.join(", ")),
        ))
    }

    fn validate_layout(&self, path: &Path) -> Result<()> {
        let cs = self.cluster_size();
        let aligned = |off: u64| off & (cs - 1) == 0;
        if self.size > MAX_SIZE {
            return Err(corrupt(
                path,
                format!("virtual size {} too large", self.size),
            ));
        }
        let needed = l1_entries_for(self.size, self.cluster_bits);
        if (self.l1_size as u64) < needed {
            return Err(corrupt(
                path,
                format!("L1 table has {} entries, {needed} needed", self.l1_size),
            ));
        }
        if self.l1_size as u64 * 8 > MAX_L1_BYTES {
            return Err(corrupt(path, "L1 table too large"));
        }
        if self.l1_size > 0 && (self.l1_table_offset == 0 || !aligned(self.l1_table_offset)) {
            return Err(corrupt(path, "L1 table offset invalid"));
        }
        if self.refcount_table_offset == 0 || !aligned(self.refcount_table_offset) {
            return Err(corrupt(path, "refcount table offset invalid"));
        }
        let rt_bytes = self.refcount_table_clusters as u64 * cs;
        if self.refcount_table_clusters == 0 || rt_bytes > MAX_REFTABLE_BYTES {
            return Err(corrupt(path, "refcount table size invalid"));
        }
        if self.nb_snapshots > MAX_SNAPSHOTS {
            return Err(corrupt(path, "too many snapshots"));
        }
        if self.nb_snapshots > 0 && !aligned(self.snapshots_offset) {
            return Err(corrupt(path, "snapshot table offset invalid"));
        }
        Ok(())
    }

    fn parse_backing_name(&mut self, path: &Path, c: &[u8]) -> Result<()> {
        let off = be64(c, 8);
        let len = be32(c, 16) as u64;
        if off == 0 {
            return Ok(());
        }
        if len > 1023 {
            return Err(corrupt(path, "backing file name longer than 1023 bytes"));
        }
        let end = off.checked_add(len).filter(|&e| e <= c.len() as u64);
        let Some(end) = end else {
            return Err(corrupt(path, "backing file name outside the first cluster"));
        };
        let name = &c[off as usize..end as usize];
        if name.is_empty() {
            return Ok(());
        }
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| corrupt(path, "backing file name is not UTF-8"))?;
        self.backing_file = Some(name);
        Ok(())
    }

    /// Serialize a fresh header (v2 or v3) with its extensions and backing name into the
    /// first cluster. Fails when it does not fit.
    pub fn serialize(&self) -> std::result::Result<Vec<u8>, String> {
        let cs = self.cluster_size() as usize;
        let mut b = vec![0u8; cs];
        let put32 =
            |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
        b[..4].copy_from_slice(MAGIC);
        put32(&mut b, 4, self.version);
        put32(&mut b, 20, self.cluster_bits);
        b[24..32].copy_from_slice(&self.size.to_be_bytes());
        put32(&mut b, 36, self.l1_size);
        b[40..48].copy_from_slice(&self.l1_table_offset.to_be_bytes());
        b[48..56].copy_from_slice(&self.refcount_table_offset.to_be_bytes());
        put32(&mut b, 56, self.refcount_table_clusters);
        put32(&mut b, 60, self.nb_snapshots);
        b[64..72].copy_from_slice(&self.snapshots_offset.to_be_bytes());
        let mut at = V2_HEADER_LEN;
        if self.version == 3 {
            b[72..80].copy_from_slice(&self.incompatible.to_be_bytes());
            b[80..88].copy_from_slice(&self.compatible.to_be_bytes());
            b[88..96].copy_from_slice(&self.autoclear.to_be_bytes());
            put32(&mut b, 96, self.refcount_order);
            put32(&mut b, 100, V3_HEADER_LEN as u32);
            at = V3_HEADER_LEN;
        }
        let too_big =
            || "header, extensions and backing file name do not fit in one cluster".to_string();
        if let Some(fmt) = &self.backing_format {
            let len = fmt.len();
            let padded = len.div_ceil(8) * 8;
            if at + 8 + padded > cs {
                return Err(too_big());
            }
            put32(&mut b, at, EXT_BACKING_FORMAT);
            put32(&mut b, at + 4, len as u32);
            b[at + 8..at + 8 + len].copy_from_slice(fmt.as_bytes());
            at += 8 + padded;
        }
        // End-of-extensions marker: 8 zero bytes, already zero.
        at += 8;
        if let Some(name) = &self.backing_file {
            if name.len() > 1023 || at + name.len() > cs {
                return Err(too_big());
            }
            b[8..16].copy_from_slice(&(at as u64).to_be_bytes());
            put32(&mut b, 16, name.len() as u32);
            b[at..at + name.len()].copy_from_slice(name.as_bytes());
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            version: 3,
            cluster_bits: 16,
            size: 1 << 30,
            l1_size: 2,
            l1_table_offset: 3 << 16,
            refcount_table_offset: 1 << 16,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: 4,
            header_length: 104,
            backing_file: Some("base.qcow2".into()),
            backing_format: Some("qcow2".into()),
        }
    }

    #[test]
    fn roundtrip() {
        let h = sample();
        let bytes = h.serialize().unwrap();
        let p = Header::parse(Path::new("x"), &bytes).unwrap();
        assert_eq!(p, h);
    }

    #[test]
    fn rejects_unknown_incompatible_and_bad_fields() {
        let mut h = sample();
        h.incompatible = 1 << 9;
        let err = Header::parse(Path::new("x"), &h.serialize().unwrap()).unwrap_err();
        assert!(err.to_string().contains("bit 9"), "{err}");
        let mut h = sample();
        h.l1_size = 1;
        assert!(Header::parse(Path::new("x"), &h.serialize().unwrap()).is_err());
        let mut h = sample();
        h.cluster_bits = 30;
        assert!(h.serialize().is_err() || Header::parse(Path::new("x"), &[0u8; 200]).is_err());
        let mut bytes = sample().serialize().unwrap();
        bytes[20..24].copy_from_slice(&30u32.to_be_bytes());
        assert!(Header::parse(Path::new("x"), &bytes).is_err());
        let mut bytes = sample().serialize().unwrap();
        // Backing name length beyond the cluster.
        bytes[16..20].copy_from_slice(&1000u32.to_be_bytes());
        bytes[8..16].copy_from_slice(&65000u64.to_be_bytes());
        assert!(Header::parse(Path::new("x"), &bytes).is_err());
        assert!(Header::parse(Path::new("x"), b"QFI\xfb").is_err());
    }
}
