//! Parent locators of differencing VHDs: reading the candidate parent paths and building
//! the locators of a new differencing disk.

use std::path::{Path, PathBuf};

use super::footer::SECTOR;
use crate::image_file::{be_u32, be_u64, ImageFile};
use crate::reference::windows_relative;
use crate::Result;

/// Offset of the 8 locator entries in the dynamic header.
const LOCATORS: usize = 576;
const LOCATOR_SIZE: usize = 24;
/// Longest locator payload we read (Windows paths are at most 32767 UTF-16 units).
const MAX_LOCATOR_BYTES: u32 = 65536;
/// Offset and length of the parent's UTF-16BE name in the dynamic header.
const PARENT_NAME: usize = 64;
const PARENT_NAME_LEN: usize = 512;

/// The directory holding `file` ("." for a bare file name).
pub(crate) fn dir_of(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Decode UTF-16 code units, stopping at the first NUL.
fn utf16(bytes: &[u8], big_endian: bool) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| {
            if big_endian {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        })
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Candidate parent names from the locators in `dyn_header`, best first: relative
/// Unicode (W2ru), absolute Unicode (W2ku), Mac OS X URL (MacX), then the parent name
/// next to the child. Relative names are relative to the child's directory; they are
/// resolved, and checked against the external-name policy, by the caller.
pub(crate) fn parent_candidates(file: &ImageFile, dyn_header: &[u8]) -> Result<Vec<PathBuf>> {
    let file_len = file.len()?;
    let mut found: Vec<(u8, PathBuf)> = Vec::new();
    for i in 0..8 {
        let e = &dyn_header[LOCATORS + i * LOCATOR_SIZE..LOCATORS + (i + 1) * LOCATOR_SIZE];
        let code = &e[0..4];
        let len = be_u32(e, 8);
        let offset = be_u64(e, 16);
        if code == [0u8; 4] {
            continue;
        }
        if len == 0 || len > MAX_LOCATOR_BYTES {
            return Err(file.corrupt(format!("parent locator {i} has bad length {len}")));
        }
        if offset
            .checked_add(u64::from(len))
            .is_none_or(|end| end > file_len)
        {
            return Err(file.corrupt(format!(
                "parent locator {i} at {offset:#x} is past the end of the file"
            )));
        }
        let mut data = vec![0u8; len as usize];
        file.read_exact_at(&mut data, offset, "parent locator")?;
        match code {
            b"W2ru" => found.push((0, windows_relative(&utf16(&data, false)))),
            b"W2ku" => {
                let s = utf16(&data, false);
                if s.starts_with('/') {
                    found.push((1, PathBuf::from(s)));
                } else if let Some(name) = s.rsplit(['\\', '/']).next().filter(|n| !n.is_empty()) {
                    // A Windows drive path: the parent may sit next to the child.
                    found.push((3, PathBuf::from(name)));
                }
            }
            b"MacX" => {
                let s = String::from_utf8_lossy(&data);
                let s = s.trim_end_matches('\0');
                if let Some(p) = s.strip_prefix("file://") {
                    found.push((2, PathBuf::from(p)));
                }
            }
            _ => {} // Deprecated or foreign platform codes (Wi2r, Wi2k, Mac alias).
        }
    }
    let name = utf16(
        &dyn_header[PARENT_NAME..PARENT_NAME + PARENT_NAME_LEN],
        true,
    );
    if !name.is_empty() {
        found.push((4, windows_relative(&name)));
    }
    found.sort_by_key(|(rank, _)| *rank);
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Locator payloads for a new differencing disk: (platform code, bytes).
pub(crate) fn build_locators(child: &Path, parent: &Path) -> Vec<([u8; 4], Vec<u8>)> {
    let utf16le = |s: &str| {
        s.encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>()
    };
    let mut out = Vec::new();
    if let Some(rel) = relative_path(child, parent) {
        out.push((*b"W2ru", utf16le(&format!(".\\{}", rel.replace('/', "\\")))));
    }
    let abs = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
    out.push((*b"W2ku", utf16le(&abs.to_string_lossy())));
    out
}

/// Parent path relative to the child's directory, when the parent is in it or below it.
fn relative_path(child: &Path, parent: &Path) -> Option<String> {
    let child_dir = std::fs::canonicalize(dir_of(child)).ok()?;
    let parent = std::fs::canonicalize(parent).ok()?;
    let rel = parent.strip_prefix(&child_dir).ok()?;
    Some(rel.to_str()?.to_string())
}

/// Write the parent name and locator entries into a dynamic header, the payloads going to
/// consecutive sectors from `data_offset`. Returns the end of the payload area.
pub(crate) fn store_locators(
    dyn_header: &mut [u8],
    parent: &Path,
    locators: &[([u8; 4], Vec<u8>)],
    data_offset: u64,
) -> u64 {
    let name: Vec<u8> = parent
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .encode_utf16()
        .take(PARENT_NAME_LEN / 2 - 1)
        .flat_map(u16::to_be_bytes)
        .collect();
    dyn_header[PARENT_NAME..PARENT_NAME + name.len()].copy_from_slice(&name);
    let mut at = data_offset;
    for (i, (code, data)) in locators.iter().enumerate().take(8) {
        let space = (data.len() as u64).div_ceil(SECTOR).max(1) * SECTOR;
        let e = &mut dyn_header[LOCATORS + i * LOCATOR_SIZE..LOCATORS + (i + 1) * LOCATOR_SIZE];
        e[0..4].copy_from_slice(code);
        // Data space in bytes, as Hyper-V and VirtualBox write it.
        e[4..8].copy_from_slice(&(space as u32).to_be_bytes());
        e[8..12].copy_from_slice(&(data.len() as u32).to_be_bytes());
        e[16..24].copy_from_slice(&at.to_be_bytes());
        at += space;
    }
    at
}
