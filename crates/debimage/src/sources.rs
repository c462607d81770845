//! Reading the host's apt sources (one-line `sources.list` and deb822 `*.sources`) to find the
//! Debian mirror the image's packages are fetched from.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// One `deb` or `deb-src` source: the one-line format gives one URI and suite, deb822 several.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceEntry {
    /// `deb`, `deb-src`.
    pub types: Vec<String>,
    /// Archive roots, without a trailing slash.
    pub uris: Vec<String>,
    /// Suites such as `bookworm`, `bookworm-security`.
    pub suites: Vec<String>,
    /// Components such as `main`.
    pub components: Vec<String>,
}

/// The archives an image is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    /// The main archive, e.g. `http://deb.debian.org/debian`.
    pub archive: String,
    /// The security archive, e.g. `http://deb.debian.org/debian-security`, when the host has one.
    pub security: Option<String>,
}

/// Debian codenames and aliases that mark an entry as a Debian archive (not a third-party one).
const DEBIAN_SUITES: &[&str] = &[
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "sid",
    "stable",
    "oldstable",
    "testing",
    "unstable",
];

/// Parse the one-line format: `deb [options] uri suite component...`, `#` comments.
pub fn parse_one_line(text: &str) -> Vec<SourceEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            let kind = words.next()?;
            if kind != "deb" && kind != "deb-src" {
                return None;
            }
            let mut rest: Vec<&str> = words.collect();
            if rest.first().is_some_and(|w| w.starts_with('[')) {
                let close = rest.iter().position(|w| w.ends_with(']'))?;
                rest.drain(..=close);
            }
            let (uri, suite) = (rest.first()?, rest.get(1)?);
            Some(SourceEntry {
                types: vec![kind.to_string()],
                uris: vec![uri.trim_end_matches('/').to_string()],
                suites: vec![suite.to_string()],
                components: rest[2..].iter().map(|c| c.to_string()).collect(),
            })
        })
        .collect()
}

/// Parse deb822 `.sources` stanzas; stanzas with `Enabled: no` are left out.
pub fn parse_deb822(text: &str) -> Vec<SourceEntry> {
    let mut entries = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if let Some(entry) = stanza_entry(&fields) {
                entries.push(entry);
            }
            fields.clear();
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    entries
}

fn stanza_entry(fields: &[(String, String)]) -> Option<SourceEntry> {
    let get = |name: &str| -> Vec<String> {
        fields
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split_whitespace().map(str::to_string))
            .collect()
    };
    let enabled = get("enabled");
    if enabled
        .first()
        .is_some_and(|v| v.eq_ignore_ascii_case("no"))
    {
        return None;
    }
    let entry = SourceEntry {
        types: get("types"),
        uris: get("uris")
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect(),
        suites: get("suites"),
        components: get("components"),
    };
    (!entry.types.is_empty() && !entry.uris.is_empty() && !entry.suites.is_empty()).then_some(entry)
}

/// The apt source files of a root directory (`/` for the host): `etc/apt/sources.list`, then
/// `etc/apt/sources.list.d/*.list` and `*.sources` in name order.
pub fn source_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("etc/apt/sources.list")];
    let dir = root.join("etc/apt/sources.list.d");
    if let Ok(read) = std::fs::read_dir(&dir) {
        let mut more: Vec<PathBuf> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|ext| ext == "list" || ext == "sources")
            })
            .collect();
        more.sort();
        files.extend(more);
    }
    files
}

/// Read and parse every source file under `root` that exists.
pub fn read_sources(root: &Path) -> Result<Vec<SourceEntry>> {
    let mut entries = Vec::new();
    for file in source_files(root) {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).at(file),
        };
        if file.extension().is_some_and(|ext| ext == "sources") {
            entries.extend(parse_deb822(&text));
        } else {
            entries.extend(parse_one_line(&text));
        }
    }
    Ok(entries)
}

/// Pick the Debian archive and security archive among `entries`: the first binary (`deb`)
/// source of a Debian suite, preferring one that carries `codename` itself.
pub fn find_mirrors(entries: &[SourceEntry], codename: &str) -> Option<Mirrors> {
    let binary = || {
        entries
            .iter()
            .filter(|e| e.types.iter().any(|t| t == "deb"))
    };
    let usable = |uri: &&String| !uri.starts_with("cdrom:");
    let archive = binary()
        .find(|e| e.suites.iter().any(|s| s == codename))
        .or_else(|| binary().find(|e| e.suites.iter().any(|s| DEBIAN_SUITES.contains(&s.as_str()))))
        .and_then(|e| e.uris.iter().find(usable))?
        .clone();
    let security = binary()
        .find(|e| {
            e.suites.iter().any(|s| {
                s.strip_suffix("-security")
                    .is_some_and(|base| DEBIAN_SUITES.contains(&base))
            })
        })
        .and_then(|e| e.uris.iter().find(usable))
        .cloned();
    Some(Mirrors { archive, security })
}

/// The mirrors for `codename` from the apt sources under `root` (`/` for the host).
pub fn host_mirrors(root: &Path, codename: &str) -> Result<Mirrors> {
    find_mirrors(&read_sources(root)?, codename).ok_or_else(|| Error::NoMirror {
        searched: source_files(root)
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests;
