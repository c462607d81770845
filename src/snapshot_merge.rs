//! Image work behind `vessel snapshot`: qcow2 overlays over a snapshot's image, the
//! backing chain of an image, and folding a snapshot's image into the images that back
//! onto it (by writing a new image and renaming it over the old one).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use block::{Allocation, CreateOptions, DiskImage, Format, OpenOptions};

/// Bytes copied per request while merging.
const CHUNK: u64 = 2 << 20;
/// Allocation maps are asked for this much virtual disk at a time.
const WINDOW: u64 = 1 << 30;

/// Open a disk of a VM's definition, or a layer vessel made over one. Names leading
/// outside a directory are followed: the definition is the user's, vessel's overlays name
/// the disks they were made over by absolute path, and `vessel snapshot take` checked the
/// disk's own chain with the disk's `allow-external-backing` setting before making them.
fn open_ro(path: &Path, format: Option<Format>) -> Result<Box<dyn DiskImage>> {
    block::open(
        path,
        &OpenOptions {
            read_only: true,
            format,
            allow_external_backing: true,
        },
    )
    .with_context(|| format!("cannot open {}", path.display()))
}

/// How `image` names `backing` in its header: the bare file name when both live in the
/// same directory (the VM directory stays movable), the absolute path otherwise.
fn backing_name(image: &Path, backing: &Path) -> PathBuf {
    match (image.parent(), backing.parent(), backing.file_name()) {
        (Some(a), Some(b), Some(name)) if a == b => PathBuf::from(name),
        _ => backing.to_path_buf(),
    }
}

/// Create a qcow2 overlay at `path` over `backing` (of `format`), with its virtual size.
pub fn create_overlay(path: &Path, backing: &Path, format: Format) -> Result<()> {
    let size = open_ro(backing, Some(format))?.size();
    let opts = CreateOptions {
        backing: Some((backing_name(path, backing), Some(format))),
        ..Default::default()
    };
    block::create(path, Format::Qcow2, size, &opts)
        .with_context(|| format!("cannot create the overlay {}", path.display()))
}

/// The canonical path of the image `path` backs onto directly, if any.
pub fn backing_of(path: &Path) -> Result<Option<PathBuf>> {
    let image = open_ro(path, None)?;
    Ok(image
        .backing()
        .map(|b| std::fs::canonicalize(b.path()).unwrap_or_else(|_| b.path().into())))
}

/// Canonical paths of `path` and every image under it in its backing chain.
pub fn chain_files(path: &Path) -> Result<Vec<PathBuf>> {
    let image = open_ro(path, None)?;
    let mut out = Vec::new();
    let mut layer: Option<&dyn DiskImage> = Some(image.as_ref());
    while let Some(l) = layer {
        out.push(std::fs::canonicalize(l.path()).unwrap_or_else(|_| l.path().into()));
        layer = l.backing();
    }
    Ok(out)
}

/// Fold `parent` (an image vessel created) into `child`, whose backing file it is: write
/// a new image at `tmp` whose content equals `child`'s but backs onto `parent`'s own
/// backing file, then rename it over `child`. `child` reads the same before and after,
/// and a crash leaves either the old or the new `child` (and maybe a stray `tmp`).
pub fn merge_into_child(parent: &Path, child: &Path, tmp: &Path) -> Result<()> {
    let mut up = open_ro(parent, None)?;
    let mut down = open_ro(child, None)?;
    let grand = up.backing().map(|b| (b.path().to_path_buf(), b.format()));
    let opts = CreateOptions {
        backing: grand
            .as_ref()
            .map(|(p, f)| (backing_name(tmp, p), Some(*f))),
        ..Default::default()
    };
    let size = down.size();
    let _ = std::fs::remove_file(tmp);
    block::create(tmp, Format::Qcow2, size, &opts)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = (|| -> Result<()> {
        let mut out = block::open(
            tmp,
            &OpenOptions {
                read_only: false,
                format: Some(Format::Qcow2),
                allow_external_backing: true,
            },
        )?;
        copy_merged(up.as_mut(), down.as_mut(), out.as_mut())?;
        out.flush()?;
        drop(out);
        std::fs::rename(tmp, child)?;
        if let Some(dir) = child.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result.with_context(|| format!("cannot merge {} into {}", parent.display(), child.display()))
}

/// Write into `out` what `down` holds itself, and where `down` reads through to `up`, what
/// `up` holds itself; leave unallocated only what reads through `up` to `up`'s backing.
fn copy_merged(
    up: &mut dyn DiskImage,
    down: &mut dyn DiskImage,
    out: &mut dyn DiskImage,
) -> Result<()> {
    let size = down.size();
    let up_size = up.size();
    let mut window = 0;
    while window < size {
        let len = (size - window).min(WINDOW);
        for e in down.allocation(window, len)? {
            match e.state {
                Allocation::Data => copy_range(down, out, e.offset, e.len)?,
                Allocation::Zero => out.write_zeroes(e.offset, e.len)?,
                Allocation::Backing => {
                    let end = e.offset + e.len;
                    let inside = end.min(up_size);
                    if e.offset < inside {
                        for u in up.allocation(e.offset, inside - e.offset)? {
                            match u.state {
                                Allocation::Data => copy_range(up, out, u.offset, u.len)?,
                                Allocation::Zero => out.write_zeroes(u.offset, u.len)?,
                                Allocation::Backing => {}
                            }
                        }
                    }
                    // Past the end of `up`, `down` read zeroes.
                    let past = e.offset.max(up_size);
                    if past < end {
                        out.write_zeroes(past, end - past)?;
                    }
                }
            }
        }
        window += len;
    }
    Ok(())
}

fn copy_range(
    from: &mut dyn DiskImage,
    to: &mut dyn DiskImage,
    offset: u64,
    len: u64,
) -> Result<()> {
    let mut buf = vec![0u8; CHUNK.min(len) as usize];
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let n = (end - pos).min(CHUNK) as usize;
        from.read_at(&mut buf[..n], pos)?;
        to.write_at(&buf[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_rw(path: &Path) -> Box<dyn DiskImage> {
        block::open(path, &OpenOptions::default()).unwrap()
    }

    fn read(path: &Path, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        open_ro(path, None)
            .unwrap()
            .read_at(&mut buf, offset)
            .unwrap();
        buf
    }

    #[test]
    fn merging_keeps_the_childs_content_and_skips_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let mid = dir.path().join("mid.qcow2");
        let top = dir.path().join("top.qcow2");
        let size = 4 << 20;
        block::create(&base, Format::Raw, size, &CreateOptions::default()).unwrap();
        open_rw(&base).write_at(&[0xaa; 1 << 20], 0).unwrap();
        create_overlay(&mid, &base, Format::Raw).unwrap();
        {
            let mut m = open_rw(&mid);
            m.write_at(&[0xbb; 65536], 65536).unwrap(); // over base data
            m.write_at(&[0xcc; 65536], 2 << 20).unwrap(); // over a base hole
            m.write_zeroes(3 * 65536, 65536).unwrap(); // zeroes over base data
            m.flush().unwrap();
        }
        create_overlay(&top, &mid, Format::Qcow2).unwrap();
        {
            let mut t = open_rw(&top);
            t.write_at(&[0xdd; 4096], 2 << 20).unwrap(); // partly over mid's data
            t.flush().unwrap();
        }
        let before = read(&top, 0, size as usize);
        let before_mid = read(&mid, 0, size as usize);
        merge_into_child(&mid, &top, &dir.path().join("top.tmp")).unwrap();
        assert_eq!(read(&top, 0, size as usize), before);
        assert_eq!(
            backing_of(&top).unwrap(),
            Some(base.canonicalize().unwrap())
        );
        assert_eq!(read(&mid, 0, size as usize), before_mid, "parent untouched");
        let report = block::check(&top, None, false, false).unwrap();
        assert_eq!(report.error_count, 0, "{:?}", report.errors);
        assert!(!dir.path().join("top.tmp").exists());
        // The base's data still comes from the base: not copied.
        let mut t = open_ro(&top, None).unwrap();
        let ext = t.allocation(5 * 65536, 65536).unwrap();
        assert_eq!(ext[0].state, Allocation::Backing);
        assert_eq!(
            chain_files(&top).unwrap(),
            vec![top.canonicalize().unwrap(), base.canonicalize().unwrap()]
        );
    }

    #[test]
    fn overlays_name_a_backing_file_in_the_same_directory_by_its_file_name() {
        assert_eq!(
            backing_name(Path::new("/vm/a.qcow2"), Path::new("/vm/b.qcow2")),
            PathBuf::from("b.qcow2")
        );
        assert_eq!(
            backing_name(Path::new("/vm/a.qcow2"), Path::new("/data/b.raw")),
            PathBuf::from("/data/b.raw")
        );
    }
}
