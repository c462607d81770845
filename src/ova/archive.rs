//! The OVA tar: unpacking it (streamed, hashed, every entry checked) and the `.mf`
//! manifest (`SHA1(name)= hex` / `SHA256(name)= hex` lines).
//!
//! An OVA is hostile input. Only regular files at the top level are accepted, with plain
//! names (no `/`, no `..`, not starting with `.`); links, devices and duplicates are
//! refused; the descriptor and manifest are bounded in size; files land only in the
//! staging directory the caller gives, under their checked names.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Largest .ovf or .mf accepted.
const MAX_TEXT: u64 = 1 << 20;
/// Most entries in an OVA.
const MAX_ENTRIES: usize = 256;

/// The hashes of one unpacked file.
#[derive(Debug, Clone)]
pub struct Hashes {
    pub sha1: String,
    pub sha256: String,
    /// Bytes in the file.
    pub len: u64,
}

/// An unpacked OVA.
#[derive(Debug)]
pub struct Unpacked {
    /// The descriptor's text and file name.
    pub ovf: (String, String),
    /// Every other file written to the staging directory, with its hashes.
    pub files: HashMap<String, Hashes>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `name` is a plain file name an OVA may use.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
}

/// The single top-level name of a tar entry (`x` or `./x`).
fn entry_name(raw: &[u8]) -> Result<String> {
    let name = std::str::from_utf8(raw).map_err(|_| anyhow!("an entry name is not UTF-8"))?;
    let name = name.strip_prefix("./").unwrap_or(name);
    if !plain_name(name) {
        bail!("entry '{name}' is refused: only plain file names at the top level (no '/', '..' or leading '.')");
    }
    Ok(name.to_string())
}

/// Unpack `ova` into `dir` (an empty directory), checking every entry.
pub fn unpack(ova: &Path, dir: &Path) -> Result<Unpacked> {
    let file = File::open(ova).with_context(|| format!("{}", ova.display()))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut ovf = None;
    let mut files = HashMap::new();
    let free = available_bytes(dir);
    let mut declared = 0u64;
    let entries = archive
        .entries()
        .with_context(|| format!("{} is not a tar archive", ova.display()))?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ENTRIES {
            bail!("more than {MAX_ENTRIES} entries");
        }
        let mut entry =
            entry.with_context(|| format!("{} is not a readable tar archive", ova.display()))?;
        let name = entry_name(&entry.path_bytes())?;
        if !entry.header().entry_type().is_file() {
            bail!(
                "entry '{name}' is refused: only regular files (no links, directories or devices)"
            );
        }
        if files.contains_key(&name) || ovf.as_ref().is_some_and(|(o, _)| *o == name) {
            bail!("entry '{name}' appears twice");
        }
        if name.ends_with(".ovf") {
            if ovf.is_some() {
                bail!("more than one .ovf descriptor");
            }
            let text = read_text(&mut entry, &name)?;
            ovf = Some((name, text));
            continue;
        }
        declared = declared.saturating_add(entry.header().size().unwrap_or(u64::MAX));
        if free.is_some_and(|f| declared > f) {
            bail!(
                "entry '{name}' takes the OVA's files to {declared} bytes, more than the {} bytes free in {}",
                free.unwrap_or(0),
                dir.display()
            );
        }
        let path = dir.join(&name);
        let mut out = File::create_new(&path).with_context(|| format!("{}", path.display()))?;
        let hashes =
            copy_hashed(&mut entry, &mut out).with_context(|| format!("unpacking {name}"))?;
        files.insert(name, hashes);
    }
    let (name, text) = ovf.ok_or_else(|| anyhow!("{} holds no .ovf descriptor", ova.display()))?;
    Ok(Unpacked {
        ovf: (text, name),
        files,
    })
}

/// Bytes an unprivileged user could still write under `dir`.
fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data, for which all-zero bytes are a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a valid, writable statvfs that
    // outlives the call.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail.saturating_mul(stat.f_frsize))
}

fn read_text(entry: &mut impl Read, name: &str) -> Result<String> {
    let mut text = Vec::new();
    entry.take(MAX_TEXT + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_TEXT {
        bail!("{name} is larger than {MAX_TEXT} bytes");
    }
    String::from_utf8(text).map_err(|_| anyhow!("{name} is not UTF-8"))
}

/// Copy `from` to `to` hashing with SHA-1 and SHA-256; zero blocks become holes.
pub fn copy_hashed(from: &mut impl Read, to: &mut File) -> Result<Hashes> {
    use std::io::{Seek, SeekFrom};
    let mut sha1 = Sha1::new();
    let mut sha256 = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        sha1.update(chunk);
        sha256.update(chunk);
        if chunk.iter().all(|&b| b == 0) {
            to.seek(SeekFrom::Current(n as i64))?;
        } else {
            to.write_all(chunk)?;
        }
        total += n as u64;
    }
    to.set_len(total)?;
    Ok(Hashes {
        sha1: hex(&sha1.finalize()),
        sha256: hex(&sha256.finalize()),
        len: total,
    })
}

/// Check the manifest text against the descriptor and unpacked files: every line must
/// name a file of the OVA with a matching digest, and every file must be listed.
pub fn check_manifest(
    mf: &str,
    ovf: &(String, String),
    files: &HashMap<String, Hashes>,
    mf_name: &str,
) -> Result<()> {
    let ovf_hashes = {
        let mut s1 = Sha1::new();
        s1.update(ovf.0.as_bytes());
        let mut s2 = Sha256::new();
        s2.update(ovf.0.as_bytes());
        Hashes {
            sha1: hex(&s1.finalize()),
            sha256: hex(&s2.finalize()),
            len: ovf.0.len() as u64,
        }
    };
    let mut listed = std::collections::HashSet::new();
    for (n, line) in mf.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = || {
            anyhow!(
                "{mf_name} line {}: expected 'SHA256(file)= digest' or 'SHA1(file)= digest'",
                n + 1
            )
        };
        let (algo, rest) = line.split_once('(').ok_or_else(bad)?;
        let (file, digest) = rest.split_once(")=").ok_or_else(bad)?;
        let digest = digest.trim().to_ascii_lowercase();
        let hashes = if file == ovf.1 {
            &ovf_hashes
        } else {
            files
                .get(file)
                .ok_or_else(|| anyhow!("{mf_name} lists '{file}', which the OVA does not hold"))?
        };
        let want = match algo.trim() {
            "SHA1" => &hashes.sha1,
            "SHA256" => &hashes.sha256,
            other => bail!("{mf_name} line {}: unsupported digest {other}", n + 1),
        };
        if *want != digest {
            bail!("{mf_name}: the {} digest of '{file}' does not match (the file is damaged or was changed); refused", algo.trim());
        }
        listed.insert(file.to_string());
    }
    for f in files.keys().chain(std::iter::once(&ovf.1)) {
        if f != mf_name && !f.ends_with(".cert") && !listed.contains(f) {
            bail!("{mf_name} does not list '{f}'; refused");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(entry_name(b"./a.vmdk").is_ok());
        for bad in [&b"../x"[..], b"/etc/passwd", b"a/b", b".hidden", b"", b"./"] {
            assert!(
                entry_name(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn huge_declared_sizes_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let ova = dir.path().join("huge.ova");
        let mut b = tar::Builder::new(File::create(&ova).unwrap());
        let mut h = tar::Header::new_ustar();
        h.set_path("disk.vmdk").unwrap();
        h.set_size(1 << 60);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        b.into_inner().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let e = unpack(&ova, &out).unwrap_err();
        assert!(e.to_string().contains("bytes free"), "{e}");
        assert!(!out.join("disk.vmdk").exists());
    }

    #[test]
    fn manifest_lines() {
        let ovf = ("<Envelope/>".to_string(), "a.ovf".to_string());
        let mut files = HashMap::new();
        let mut out = tempfile::tempfile().unwrap();
        let h = copy_hashed(&mut &b"disk"[..], &mut out).unwrap();
        files.insert("a.vmdk".to_string(), h.clone());
        let mut s = Sha256::new();
        s.update(b"<Envelope/>");
        let good = format!(
            "SHA256(a.ovf)= {}\nSHA1(a.vmdk)= {}\n",
            hex(&s.finalize()),
            h.sha1.to_uppercase()
        );
        check_manifest(&good, &ovf, &files, "a.mf").unwrap();
        let bad = good.replace(&h.sha1.to_uppercase(), &"0".repeat(40));
        let e = check_manifest(&bad, &ovf, &files, "a.mf").unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        let missing = good.lines().next().unwrap().to_string();
        assert!(check_manifest(&missing, &ovf, &files, "a.mf")
            .unwrap_err()
            .to_string()
            .contains("does not list 'a.vmdk'"));
        assert!(check_manifest("MD5(a.ovf)= 00", &ovf, &files, "a.mf").is_err());
        assert!(check_manifest("SHA1(b.vmdk)= 00", &ovf, &files, "a.mf").is_err());
    }
}
