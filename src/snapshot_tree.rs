//! Snapshot metadata of one VM (`snapshots.toml` in its directory): the tree of disk
//! snapshots, the image each snapshot keeps per disk, the overlays vessel created for the
//! current state, and the one change a command may have left half done.
//!
//! Pure logic: no disk images are touched here. `snapshot_cli` does the file work.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// File name of the metadata in the VM directory.
pub const FILE: &str = "snapshots.toml";
/// Longest snapshot name, in bytes.
pub const MAX_NAME: usize = 128;

/// The committed state of a VM's snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotMeta {
    /// The snapshot the current state descends from (the parent of the current overlays).
    pub current: Option<String>,
    /// Counter for the names of the files vessel creates (`layer-N-diskI.qcow2`).
    #[serde(default)]
    pub next_layer: u64,
    /// Overlays vessel created that hold the current state (the VM's disks in vm.toml).
    #[serde(default)]
    pub current_layers: Vec<PathBuf>,
    /// Files vessel created that nothing references any more and are to be deleted.
    #[serde(default)]
    pub garbage: Vec<PathBuf>,
    /// A change whose commit point is the write of vm.toml (see [`Pending`]).
    pub pending: Option<Box<Pending>>,
    #[serde(default, rename = "snapshot")]
    pub snapshots: Vec<Snapshot>,
}

/// A change in flight. It committed if vm.toml names every file in `created` (then the
/// metadata becomes `after` and `discard` is deleted); otherwise it is rolled back by
/// deleting `created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    pub created: Vec<PathBuf>,
    #[serde(default)]
    pub discard: Vec<PathBuf>,
    pub after: SnapshotMeta,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub name: String,
    pub parent: Option<String>,
    /// UTC, RFC 3339.
    pub created: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, rename = "disk")]
    pub disks: Vec<SnapshotDisk>,
}

/// One disk of the VM as a snapshot keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotDisk {
    /// Position of the disk in vm.toml.
    pub index: usize,
    /// The read-only image holding the disk's content at the snapshot.
    pub image: PathBuf,
    pub format: String,
    /// A read-only disk: recorded, never snapshotted.
    #[serde(default)]
    pub readonly: bool,
    /// vessel created `image` (it may merge and delete it); false for images the user gave.
    #[serde(default)]
    pub owned: bool,
}

/// Why a snapshot name is refused, or `None` when it is fine.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.trim().is_empty() {
        Some("a snapshot name must not be empty")
    } else if name.len() > MAX_NAME {
        Some("a snapshot name must be at most 128 bytes")
    } else if name.contains('/') {
        Some("a snapshot name must not contain '/'")
    } else if name.chars().any(char::is_control) {
        Some("a snapshot name must not contain control characters")
    } else {
        None
    }
}

impl SnapshotMeta {
    /// Read `snapshots.toml` from `dir`; no file means no snapshots.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let meta: Self =
            toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
        meta.check()
            .with_context(|| format!("invalid {}", path.display()))?;
        Ok(meta)
    }

    /// Write `snapshots.toml` into `dir` atomically (temporary file, fsync, rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.check()?;
        let text = toml::to_string_pretty(self)?;
        write_atomic(&dir.join(FILE), text.as_bytes())
    }

    /// Names unique and valid, parents known, no cycles.
    pub fn check(&self) -> Result<()> {
        let mut seen = BTreeSet::new();
        for s in &self.snapshots {
            if let Some(p) = name_problem(&s.name) {
                bail!("snapshot '{}': {p}", s.name);
            }
            if !seen.insert(s.name.as_str()) {
                bail!("snapshot '{}' is listed twice", s.name);
            }
        }
        for s in &self.snapshots {
            if let Some(p) = &s.parent {
                if !seen.contains(p.as_str()) {
                    bail!("snapshot '{}' has an unknown parent '{p}'", s.name);
                }
            }
            // Walking up from any snapshot must end within the number of snapshots.
            let mut at = s.parent.as_deref();
            let mut steps = 0;
            while let Some(p) = at {
                steps += 1;
                if steps > self.snapshots.len() {
                    bail!("snapshot '{}' is its own ancestor", s.name);
                }
                at = self.get(p).and_then(|x| x.parent.as_deref());
            }
        }
        if let Some(c) = &self.current {
            if !seen.contains(c.as_str()) {
                bail!("the current state descends from an unknown snapshot '{c}'");
            }
        }
        if let Some(p) = &self.pending {
            p.after.check()?;
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.name == name)
    }

    /// The name of the next file vessel creates for disk `index`, bumping the counter.
    pub fn next_layer_name(&mut self, index: usize) -> String {
        let n = self.next_layer;
        self.next_layer += 1;
        format!("layer-{n}-disk{index}.qcow2")
    }

    /// Check that `name` can be a new snapshot.
    pub fn check_new_name(&self, name: &str) -> Result<()> {
        if let Some(p) = name_problem(name) {
            bail!("invalid snapshot name '{name}': {p}");
        }
        if self.get(name).is_some() {
            bail!("a snapshot named '{name}' already exists");
        }
        Ok(())
    }

    /// Drop snapshot `name` from the tree: its children hang from its parent, and the
    /// current state descends from its parent if it descended from it.
    pub fn remove(&mut self, name: &str) -> Result<Snapshot> {
        let Some(pos) = self.snapshots.iter().position(|s| s.name == name) else {
            bail!("no snapshot named '{name}'");
        };
        let gone = self.snapshots.remove(pos);
        for s in &mut self.snapshots {
            if s.parent.as_deref() == Some(name) {
                s.parent = gone.parent.clone();
            }
        }
        if self.current.as_deref() == Some(name) {
            self.current = gone.parent.clone();
        }
        Ok(gone)
    }

    /// Children of `parent` (roots for `None`), in creation order.
    pub fn children(&self, parent: Option<&str>) -> Vec<&Snapshot> {
        self.snapshots
            .iter()
            .filter(|s| s.parent.as_deref() == parent)
            .collect()
    }

    /// Every image path the metadata references (snapshot images and current overlays).
    pub fn referenced(&self) -> BTreeSet<PathBuf> {
        let mut set: BTreeSet<PathBuf> = self.current_layers.iter().cloned().collect();
        for s in &self.snapshots {
            set.extend(s.disks.iter().map(|d| d.image.clone()));
        }
        set
    }

    /// The tree as text: one line per snapshot, indented under its parent, and a
    /// `[current state]` line under the snapshot the current state descends from.
    pub fn render_tree(&self) -> String {
        let mut out = String::new();
        if self.current.is_none() {
            out.push_str("[current state]\n");
        }
        let roots = self.children(None);
        for (i, s) in roots.iter().enumerate() {
            self.render_node(s, "", i + 1 == roots.len(), &mut out);
        }
        out
    }

    fn render_node(&self, s: &Snapshot, prefix: &str, last: bool, out: &mut String) {
        let branch = if last { "`-- " } else { "|-- " };
        out.push_str(&format!("{prefix}{branch}{}  ({})", s.name, s.created));
        if !s.description.is_empty() {
            out.push_str(&format!("  {}", s.description));
        }
        out.push('\n');
        let child_prefix = format!("{prefix}{}", if last { "    " } else { "|   " });
        let kids = self.children(Some(&s.name));
        let here = self.current.as_deref() == Some(s.name.as_str());
        let total = kids.len() + usize::from(here);
        for (i, k) in kids.iter().enumerate() {
            self.render_node(k, &child_prefix, i + 1 == total, out);
        }
        if here {
            out.push_str(&format!("{child_prefix}`-- [current state]\n"));
        }
    }

    /// The tree as JSON: `{"current": NAME, "snapshots": [...]}` with each snapshot's
    /// parent, children and disks.
    pub fn to_json(&self) -> serde_json::Value {
        let list: Vec<_> = self
            .snapshots
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "parent": s.parent,
                    "children": self.children(Some(&s.name)).iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                    "created": s.created,
                    "description": s.description,
                    "current": self.current.as_deref() == Some(s.name.as_str()),
                    "disks": s.disks.iter().map(|d| serde_json::json!({
                        "index": d.index,
                        "image": d.image,
                        "format": d.format,
                        "readonly": d.readonly,
                        "created_by_vessel": d.owned,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({ "current": self.current, "snapshots": list })
    }
}

/// Replace `path` with `data`: write a temporary file beside it, fsync, rename, fsync the
/// directory. A crash leaves either the old or the new content.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// `secs` since the Unix epoch as an RFC 3339 UTC time (`2026-11-28T04:05:06Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Now, as [`rfc3339`].
pub fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, parent: Option<&str>) -> Snapshot {
        Snapshot {
            name: name.into(),
            parent: parent.map(Into::into),
            created: rfc3339(0),
            description: String::new(),
            disks: vec![SnapshotDisk {
                index: 0,
                image: PathBuf::from(format!("/vm/{name}.qcow2")),
                format: "qcow2".into(),
                readonly: false,
                owned: true,
            }],
        }
    }

    fn tree() -> SnapshotMeta {
        SnapshotMeta {
            current: Some("c".into()),
            snapshots: vec![
                snap("a", None),
                snap("b", Some("a")),
                snap("c", Some("a")),
                snap("d", Some("b")),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(name_problem("").is_some());
        assert!(name_problem("  ").is_some());
        assert!(name_problem("a/b").is_some());
        assert!(name_problem("bad\nname").is_some());
        assert!(name_problem(&"x".repeat(129)).is_some());
        assert!(name_problem("before upgrade (v2)").is_none());
        let meta = tree();
        assert!(meta.check_new_name("a").is_err());
        assert!(meta.check_new_name("e").is_ok());
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_838_706), "2026-11-28T04:05:06Z");
    }

    #[test]
    fn removing_a_snapshot_reparents_its_children_and_the_current_state() {
        let mut meta = tree();
        meta.remove("a").unwrap();
        assert_eq!(meta.get("b").unwrap().parent, None);
        assert_eq!(meta.get("c").unwrap().parent, None);
        meta.remove("b").unwrap();
        assert_eq!(meta.get("d").unwrap().parent, None);
        meta.remove("c").unwrap();
        assert_eq!(meta.current, None);
        assert!(meta.remove("c").is_err());
        meta.check().unwrap();
    }

    #[test]
    fn check_refuses_duplicates_unknown_parents_and_cycles() {
        let mut meta = tree();
        meta.snapshots.push(snap("a", None));
        assert!(meta.check().is_err());
        let mut meta = tree();
        meta.snapshots.push(snap("e", Some("zz")));
        assert!(meta.check().is_err());
        let mut meta = tree();
        meta.snapshots[0].parent = Some("d".into());
        assert!(meta.check().unwrap_err().to_string().contains("ancestor"));
        let mut meta = tree();
        meta.current = Some("zz".into());
        assert!(meta.check().is_err());
    }

    #[test]
    fn tree_rendering_shows_branches_and_the_current_state() {
        let text = tree().render_tree();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("`-- a  (1970-01-01T00:00:00Z)"),
            "{text}"
        );
        assert!(lines[1].starts_with("    |-- b"), "{text}");
        assert!(lines[2].starts_with("    |   `-- d"), "{text}");
        assert!(lines[3].starts_with("    `-- c"), "{text}");
        assert_eq!(lines[4], "        `-- [current state]", "{text}");
        let json = tree().to_json();
        assert_eq!(json["current"], "c");
        assert_eq!(
            json["snapshots"][0]["children"],
            serde_json::json!(["b", "c"])
        );
        assert_eq!(json["snapshots"][2]["current"], true);
        let empty = SnapshotMeta::default().render_tree();
        assert_eq!(empty, "[current state]\n");
    }

    #[test]
    fn metadata_round_trips_through_toml_with_a_pending_change() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            SnapshotMeta::load(dir.path()).unwrap(),
            SnapshotMeta::default()
        );
        let mut meta = tree();
        meta.next_layer = 7;
        meta.current_layers = vec!["/vm/layer-6-disk0.qcow2".into()];
        meta.pending = Some(Box::new(Pending {
            created: vec!["/vm/layer-7-disk0.qcow2".into()],
            discard: vec!["/vm/layer-6-disk0.qcow2".into()],
            after: tree(),
        }));
        meta.save(dir.path()).unwrap();
        assert_eq!(SnapshotMeta::load(dir.path()).unwrap(), meta);
        assert_eq!(meta.next_layer_name(2), "layer-7-disk2.qcow2");
        assert_eq!(meta.next_layer, 8);
        assert_eq!(meta.referenced().len(), 5);
        std::fs::write(dir.path().join(FILE), "current = \"nope\"\n").unwrap();
        assert!(SnapshotMeta::load(dir.path()).is_err());
    }
}
