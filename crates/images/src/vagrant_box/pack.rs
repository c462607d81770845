//! Writing a `vessel` box: a tar holding `metadata.json` (`{"provider":"vessel",
//! "format":…,"virtual_size":GiB}`) and `box.img`, the disk Vagrant hands back to the
//! vessel provider (vagrant-vessel) and that `vessel image import` takes again.
//!
//! The box is written to a staging file next to the destination and linked into place only
//! when complete, so an interrupted write leaves nothing at the destination and an existing
//! file there is never replaced.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::BoxError;

/// The provider name of boxes vessel writes.
pub const VESSEL_PROVIDER: &str = "vessel";

const GIB: u64 = 1 << 30;

/// Write the box `out` from `disk` (a disk image whose format name is `format`, of
/// `virtual_size` bytes). `out` must not exist.
pub fn pack_box(disk: &Path, format: &str, virtual_size: u64, out: &Path) -> Result<(), BoxError> {
    if out.symlink_metadata().is_ok() {
        return Err(BoxError::Exists {
            path: out.to_path_buf(),
        });
    }
    let staging = staging_path(out);
    let result = write_tar(disk, &metadata_json(format, virtual_size), &staging)
        .and_then(|()| std::fs::hard_link(&staging, out).map_err(io(out)));
    let _ = std::fs::remove_file(&staging);
    match result {
        Err(BoxError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(BoxError::Exists {
                path: out.to_path_buf(),
            })
        }
        other => other,
    }
}

/// The metadata.json of a vessel box: the size in whole GiB, rounded up, as Vagrant's
/// libvirt boxes give it.
fn metadata_json(format: &str, virtual_size: u64) -> String {
    let gib = virtual_size.div_ceil(GIB);
    serde_json::json!({
        "provider": VESSEL_PROVIDER,
        "format": format,
        "virtual_size": gib,
    })
    .to_string()
}

fn staging_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map_or_else(|| "box".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BoxError + '_ {
    |source| BoxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_tar(disk: &Path, metadata: &str, staging: &Path) -> Result<(), BoxError> {
    let file = File::create_new(staging).map_err(io(staging))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    tar.mode(tar::HeaderMode::Deterministic);
    let mut header = tar::Header::new_gnu();
    header.set_size(metadata.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "metadata.json", metadata.as_bytes())
        .map_err(io(staging))?;
    let mut image = File::open(disk).map_err(io(disk))?;
    tar.append_file("box.img", &mut image).map_err(io(disk))?;
    let mut writer = tar.into_inner().map_err(io(staging))?;
    writer.flush().map_err(io(staging))?;
    let file = writer
        .into_inner()
        .map_err(|e| io(staging)(e.into_error()))?;
    file.sync_all().map_err(io(staging))
}
