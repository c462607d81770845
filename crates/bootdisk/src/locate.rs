//! Where the kernel is: the default entry of grub.cfg (on any ext2/3/4 partition, paths
//! looked up first on that partition, then on the others), else the `/vmlinuz` and
//! `/initrd.img` symlinks. Symlinks are followed inside one file system by ext4-view; a
//! link into a separate /boot partition (`/vmlinuz -> boot/vmlinuz-X`) is followed there.

use crate::boot::{BootSource, Error, Limits, Volume};
use crate::ext4fs::ExtFs;
use crate::grub::{self, BootEntry};

/// Where grub.cfg lives on a root file system or a separate /boot.
const GRUB_CFGS: [&str; 4] = [
    "/boot/grub/grub.cfg",
    "/grub/grub.cfg",
    "/boot/grub2/grub.cfg",
    "/grub2/grub.cfg",
];
/// Kernel and initrd symlinks, on the root file system or in /boot.
const LINKS: [(&str, &str); 2] = [
    ("/vmlinuz", "/initrd.img"),
    ("/boot/vmlinuz", "/boot/initrd.img"),
];
const GRUBENV_LIMIT: u64 = 64 << 10;

/// A kernel that was found and read.
pub(crate) struct Found {
    pub(crate) kernel: Vec<u8>,
    pub(crate) initrd: Option<Vec<u8>>,
    pub(crate) cmdline: String,
    pub(crate) source: BootSource,
    pub(crate) kernel_path: String,
    /// Index into the volume list of the partition the kernel came from.
    pub(crate) boot_volume: usize,
}

/// Try grub.cfg, then symlinks. `notes` collects why each attempt failed.
pub(crate) fn find(
    volumes: &[Volume],
    limits: &Limits,
    notes: &mut Vec<String>,
) -> Result<Option<Found>, Error> {
    if let Some(found) = from_grub(volumes, limits, notes)? {
        return Ok(Some(found));
    }
    from_symlinks(volumes, limits, notes)
}

fn read(
    v: &Volume,
    fs: &ExtFs,
    path: &str,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, Error> {
    fs.read_capped(path, limit, what)
        .map_err(|source| Error::File {
            index: v.part.index,
            source,
        })
}

fn from_grub(
    volumes: &[Volume],
    limits: &Limits,
    notes: &mut Vec<String>,
) -> Result<Option<Found>, Error> {
    let mut any = false;
    for (i, v) in volumes.iter().enumerate() {
        let Some(fs) = &v.fs else { continue };
        for cfg in GRUB_CFGS.into_iter().filter(|p| fs.exists(p)) {
            any = true;
            let text = read(v, fs, cfg, limits.grub_cfg, "grub.cfg")?;
            let env_path = cfg.replace("grub.cfg", "grubenv");
            let env = fs.read_capped(&env_path, GRUBENV_LIMIT, "grubenv").ok();
            let env = env.as_deref().map(String::from_utf8_lossy);
            let entry = grub::parse(&String::from_utf8_lossy(&text), env.as_deref())
                .and_then(|c| c.default_entry());
            let where_ = format!("{cfg} on partition {}", v.part.index);
            match entry {
                Err(e) => notes.push(format!("{where_} {e}")),
                Ok(entry) => match load_entry(volumes, i, &entry, limits)? {
                    Ok(mut found) => {
                        found.source = BootSource::GrubEntry {
                            title: entry.title,
                            config: cfg.into(),
                        };
                        return Ok(Some(found));
                    }
                    Err(missing) => notes.push(format!(
                        "{where_}: entry '{}' names {missing}, which is on no ext2/3/4 partition",
                        entry.title
                    )),
                },
            }
        }
    }
    if !any {
        notes.push("there is no /boot/grub/grub.cfg".into());
    }
    Ok(None)
}

/// The volume holding `path`: `prefer` first, then the others.
fn locate(volumes: &[Volume], prefer: usize, path: &str) -> Option<usize> {
    let order = std::iter::once(prefer).chain((0..volumes.len()).filter(|&i| i != prefer));
    order.into_iter().find(|&i| {
        volumes
            .get(i)
            .and_then(|v| v.fs.as_ref())
            .is_some_and(|fs| fs.exists(path))
    })
}

/// Read the files of a grub entry; `Ok(Err(path))` names a file that is nowhere.
fn load_entry(
    volumes: &[Volume],
    prefer: usize,
    entry: &BootEntry,
    limits: &Limits,
) -> Result<Result<Found, String>, Error> {
    let found = locate(volumes, prefer, &entry.kernel).and_then(|k| Some((k, ext(volumes, k)?)));
    let Some((k, (vk, fsk))) = found else {
        return Ok(Err(entry.kernel.clone()));
    };
    let kernel = read(vk, fsk, &entry.kernel, limits.kernel, "kernel")?;
    let mut initrd: Option<Vec<u8>> = None;
    for path in &entry.initrds {
        let Some((v, fs)) = locate(volumes, k, path).and_then(|n| ext(volumes, n)) else {
            return Ok(Err(path.clone()));
        };
        let so_far = initrd.as_ref().map_or(0, |b| b.len() as u64);
        let part = read(v, fs, path, limits.initrd.saturating_sub(so_far), "initrd")?;
        initrd.get_or_insert_with(Vec::new).extend_from_slice(&part);
    }
    Ok(Ok(Found {
        kernel,
        initrd,
        cmdline: entry.cmdline.clone(),
        source: BootSource::Symlinks,
        kernel_path: entry.kernel.clone(),
        boot_volume: k,
    }))
}

/// Volume `i` and its file system, if it has one.
fn ext(volumes: &[Volume], i: usize) -> Option<(&Volume, &ExtFs)> {
    let v = volumes.get(i)?;
    Some((v, v.fs.as_ref()?))
}

fn from_symlinks(
    volumes: &[Volume],
    limits: &Limits,
    notes: &mut Vec<String>,
) -> Result<Option<Found>, Error> {
    for (i, v) in volumes.iter().enumerate() {
        let Some(fs) = &v.fs else { continue };
        for (kernel_link, initrd_link) in LINKS {
            let Some((k, kernel_path)) = follow(volumes, i, kernel_link) else {
                continue;
            };
            let Some((vk, fsk)) = ext(volumes, k) else {
                continue;
            };
            let kernel = read(vk, fsk, &kernel_path, limits.kernel, "kernel")?;
            let initrd = match follow(volumes, i, initrd_link)
                .and_then(|(n, path)| Some((ext(volumes, n)?, path)))
            {
                Some(((vn, fsn), path)) => Some(read(vn, fsn, &path, limits.initrd, "initrd")?),
                None => None,
            };
            let root = if fs.is_dir("/etc") {
                i
            } else {
                volumes
                    .iter()
                    .position(|v| v.fs.as_ref().is_some_and(|f| f.is_dir("/etc")))
                    .unwrap_or(i)
            };
            let uuid = volumes[root].fs.as_ref().map_or("", |f| f.uuid.as_str());
            return Ok(Some(Found {
                kernel,
                initrd,
                cmdline: format!("root=UUID={uuid} ro"),
                source: BootSource::Symlinks,
                kernel_path,
                boot_volume: k,
            }));
        }
    }
    notes.push("/vmlinuz and /boot/vmlinuz are missing".into());
    Ok(None)
}

/// Resolve the link `path` of volume `i`: inside its own file system, or, when it dangles
/// into `/boot/...`, on another volume (a separate /boot partition).
fn follow(volumes: &[Volume], i: usize, path: &str) -> Option<(usize, String)> {
    let fs = volumes.get(i)?.fs.as_ref()?;
    if fs.exists(path) {
        return Some((i, fs.canonical(path).unwrap_or_else(|| path.to_string())));
    }
    let target = fs.link_target(path)?;
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    let absolute = normalize(&format!("{dir}/{target}"), &target)?;
    let rest = absolute.strip_prefix("/boot/")?;
    let rest = format!("/{rest}");
    (0..volumes.len()).filter(|&j| j != i).find_map(|j| {
        let f = volumes[j].fs.as_ref()?;
        f.exists(&rest)
            .then(|| (j, f.canonical(&rest).unwrap_or_else(|| rest.clone())))
    })
}

/// Normalize `joined` (dir + relative target), or `target` when it is absolute; resolves
/// `.` and `..` lexically (never above `/`).
fn normalize(joined: &str, target: &str) -> Option<String> {
    let src = if target.starts_with('/') {
        target
    } else {
        joined
    };
    let mut out: Vec<&str> = Vec::new();
    for c in src.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    (!out.is_empty()).then(|| format!("/{}", out.join("/")))
}

/// The volume `root=` on the command line names, if it can be matched.
pub(crate) fn root_volume(volumes: &[Volume], cmdline: &str) -> Option<usize> {
    let root = cmdline
        .split_whitespace()
        .rev()
        .find_map(|a| a.strip_prefix("root="))?;
    fn fs(v: &Volume) -> Option<&ExtFs> {
        v.fs.as_ref()
    }
    let (key, value) = if let Some(u) = root
        .strip_prefix("UUID=")
        .or(root.strip_prefix("/dev/disk/by-uuid/"))
    {
        ("uuid", u)
    } else if let Some(u) = root
        .strip_prefix("PARTUUID=")
        .or(root.strip_prefix("/dev/disk/by-partuuid/"))
    {
        ("partuuid", u.split('/').next().unwrap_or(u))
    } else if let Some(l) = root
        .strip_prefix("LABEL=")
        .or(root.strip_prefix("/dev/disk/by-label/"))
    {
        ("label", l)
    } else {
        let digits = root.len() - root.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let n: u32 = root[root.len() - digits..].parse().ok()?;
        return volumes.iter().position(|v| v.part.index == n);
    };
    volumes.iter().position(|v| match key {
        "uuid" => fs(v).is_some_and(|f| f.uuid.eq_ignore_ascii_case(value)),
        "partuuid" => v
            .part
            .part_uuid
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case(value)),
        _ => fs(v).is_some_and(|f| f.label == value),
    })
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalize_paths() {
        assert_eq!(
            normalize("/boot/vmlinuz-6", "boot/vmlinuz-6").unwrap(),
            "/boot/vmlinuz-6"
        );
        assert_eq!(
            normalize("/x/../../boot/./k", "../../boot/./k").unwrap(),
            "/boot/k"
        );
        assert_eq!(normalize("", "/boot/k").unwrap(), "/boot/k");
        assert_eq!(normalize("/..", ".."), None);
    }
}
