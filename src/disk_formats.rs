//! Recording the format of VM disks defined without one.
//!
//! A disk whose format is detected from its content on every start lets a guest change
//! that format: writing a qcow2 header into its raw disk would make the next start open
//! a qcow2 image whose backing file the guest chose. So the format is detected once, when
//! the VM is created or first started, and written into vm.toml; later starts use it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use crate::vmdef::VmDefinition;

/// Detect the format of every disk of the definition at `file` that has none and exists,
/// and write it into the file (comments and layout kept). Returns what was recorded.
pub fn record(file: &Path) -> Result<Vec<(PathBuf, block::Format)>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let def = VmDefinition::parse(file, &text)?;
    let mut found = Vec::new();
    for (i, d) in def.disks.iter().enumerate() {
        let path = d.path.get_ref();
        if d.format.is_some() || path.symlink_metadata().is_err() {
            continue;
        }
        let format = block::detect(path).with_context(|| format!("disk {}", path.display()))?;
        found.push((i, path.clone(), format));
    }
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("cannot edit {}", file.display()))?;
    for (i, _, format) in &found {
        set_format(&mut doc, *i, format.name()).ok_or_else(|| {
            anyhow!(
                "{}: cannot find disk {i} to record its format",
                file.display()
            )
        })?;
    }
    let tmp = file.with_extension("toml.tmp");
    std::fs::write(&tmp, doc.to_string())
        .and_then(|()| std::fs::rename(&tmp, file))
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(found.into_iter().map(|(_, p, f)| (p, f)).collect())
}

/// Set `format` of the `index`th disk, in `[[disk]]` tables or an inline array.
fn set_format(doc: &mut toml_edit::DocumentMut, index: usize, format: &str) -> Option<()> {
    let disks = doc.get_mut("disk")?;
    if let Some(tables) = disks.as_array_of_tables_mut() {
        tables
            .get_mut(index)?
            .insert("format", toml_edit::value(format));
        return Some(());
    }
    let table = disks
        .as_array_mut()?
        .get_mut(index)?
        .as_inline_table_mut()?;
    table.insert("format", format.into());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const QCOW2_WITH_SHADOW: &[u8] = b"QFI\xfb\0\0\0\x03";

    #[test]
    fn a_recorded_format_survives_a_content_change() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("guest.img");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"k").unwrap();
        let file = dir.path().join("vm.toml");
        let text = format!(
            "# my VM\nname = \"t\"\n\n[boot]\nkernel = {kernel:?}\n\n[[disk]]\npath = {disk:?} # root\n"
        );
        std::fs::write(&file, &text).unwrap();
        let recorded = record(&file).unwrap();
        assert_eq!(recorded, vec![(disk.clone(), block::Format::Raw)]);
        let written = std::fs::read_to_string(&file).unwrap();
        assert!(
            written.starts_with("# my VM\n") && written.contains("# root"),
            "{written}"
        );
        // The guest rewrites its disk into a qcow2 header: the definition still says raw.
        let mut bytes = std::fs::read(&disk).unwrap();
        bytes[..8].copy_from_slice(QCOW2_WITH_SHADOW);
        std::fs::write(&disk, bytes).unwrap();
        assert!(record(&file).unwrap().is_empty());
        let def = VmDefinition::load(&file).unwrap();
        let cfg = def.vm_config(vmm::SerialMode::None).unwrap();
        assert_eq!(cfg.machine.disks[0].format, Some(block::Format::Raw));
    }

    #[test]
    fn inline_disk_tables_and_missing_disks() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("a.qcow2");
        block::create(&disk, block::Format::Qcow2, 1 << 20, &Default::default()).unwrap();
        let missing = dir.path().join("later.raw");
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"k").unwrap();
        let file = dir.path().join("vm.toml");
        let text = format!(
            "name = \"t\"\ndisk = [{{ path = {disk:?} }}, {{ path = {missing:?} }}]\n\n[boot]\nkernel = {kernel:?}\n"
        );
        std::fs::write(&file, &text).unwrap();
        assert_eq!(
            record(&file).unwrap(),
            vec![(disk.clone(), block::Format::Qcow2)]
        );
        let def = VmDefinition::load(&file).unwrap();
        assert_eq!(def.disks[0].format.as_ref().unwrap().get_ref(), "qcow2");
        assert!(def.disks[1].format.is_none());
    }
}
