//! The spec's mounts as the agent takes them. Kernel file systems stay as they are. A bind
//! of a host file (the CRI's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`) becomes
//! a copy written into the root at the start; the CRI's bind of its sandbox's shm directory
//! becomes the pod's one shared-memory tmpfs in the VM. A bind of a host directory
//! (volumes) becomes a [`VOLUME`] mount of its place in the VM's virtio-fs share
//! ([`crate::volumes`]). Binds of anything else (devices, sockets) are refused.

use std::io::Read;
use std::path::Path;

use agent::protocol::{FileSpec, MountSpec, MAX_FILE, MOUNT_TYPES, POD_SHM, VOLUME};

use crate::volumes::{source_name, Volume};

use super::{unsupported, Mount, SpecError};

/// The mounts and the copied-in files of a container.
pub(super) struct Converted {
    pub mounts: Vec<MountSpec>,
    pub files: Vec<FileSpec>,
    pub volumes: Vec<Volume>,
}

/// Propagation options: they concern the host's mount tree, which the guest does not share.
const PROPAGATION: [&str; 10] = [
    "bind",
    "rbind",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
];

/// Converts container `id`'s mounts.
pub(super) fn convert(mounts: Vec<Mount>, id: &str) -> Result<Converted, SpecError> {
    let mut converted = Converted {
        mounts: Vec::with_capacity(mounts.len()),
        files: Vec::new(),
        volumes: Vec::new(),
    };
    for m in mounts {
        let fstype = m.fstype.clone().unwrap_or_default();
        let bind = fstype == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
        if !bind {
            if !MOUNT_TYPES.contains(&fstype.as_str()) || fstype == POD_SHM || fstype == VOLUME {
                return Err(refused(&m, &fstype));
            }
            converted.mounts.push(MountSpec {
                destination: m.destination,
                fstype,
                options: m.options,
                source: None,
            });
            continue;
        }
        let source = m.source.clone().unwrap_or_default();
        let options: Vec<String> = m
            .options
            .iter()
            .filter(|o| !PROPAGATION.contains(&o.as_str()))
            .cloned()
            .collect();
        if is_sandbox_shm(&source) {
            converted.mounts.push(MountSpec {
                destination: m.destination,
                fstype: POD_SHM.into(),
                options,
                source: None,
            });
        } else if Path::new(&source).is_dir() {
            converted.volumes.push(Volume {
                host: source.into(),
                readonly: options.iter().any(|o| o == "ro"),
            });
            converted.mounts.push(MountSpec {
                destination: m.destination,
                fstype: VOLUME.into(),
                options,
                source: Some(source_name(id, converted.volumes.len() - 1)),
            });
        } else if Path::new(&source).is_file() {
            converted.files.push(FileSpec {
                data: read_small(&source)?,
                readonly: options.iter().any(|o| o == "ro"),
                destination: m.destination,
            });
        } else {
            return Err(refused(&m, "bind"));
        }
    }
    Ok(converted)
}

fn refused(m: &Mount, fstype: &str) -> SpecError {
    unsupported(format!(
        "mount at {}: type {fstype:?} from {:?} (the guest mounts {}, shares binds of host \
         directories through virtio-fs, copies in binds of host files and shares the pod's \
         /dev/shm; binds of anything else are not supported)",
        m.destination,
        m.source.as_deref().unwrap_or_default(),
        MOUNT_TYPES
            .iter()
            .filter(|t| **t != POD_SHM && **t != VOLUME)
            .copied()
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Whether `source` is the shm directory containerd's CRI made for a pod's sandbox
/// (`…/io.containerd.grpc.v1.cri/sandboxes/<id>/shm`).
fn is_sandbox_shm(source: &str) -> bool {
    let path = Path::new(source);
    let names: Vec<_> = path.iter().rev().take(4).collect();
    path.is_absolute()
        && matches!(names.as_slice(), [shm, _, sandboxes, cri]
            if *shm == "shm" && *sandboxes == "sandboxes" && *cri == "io.containerd.grpc.v1.cri")
}

/// A host file of at most [`MAX_FILE`] bytes.
fn read_small(source: &str) -> Result<Vec<u8>, SpecError> {
    let file = std::fs::File::open(source).map_err(|e| SpecError::Read(source.into(), e))?;
    let mut data = Vec::new();
    file.take(MAX_FILE as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| SpecError::Read(source.into(), e))?;
    if data.len() > MAX_FILE {
        return Err(unsupported(format!(
            "bind of {source}: files larger than {MAX_FILE} bytes are not copied into the VM"
        )));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(destination: &str, fstype: &str, source: &str, options: &[&str]) -> Mount {
        Mount {
            destination: destination.into(),
            fstype: Some(fstype.into()),
            source: Some(source.into()),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn cris_binds_become_copies_and_the_pods_shm() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, b"127.0.0.1 localhost\n").unwrap();
        let shm = dir
            .path()
            .join("s/io.containerd.grpc.v1.cri/sandboxes/abc/shm");
        std::fs::create_dir_all(&shm).unwrap();
        let c = convert(
            vec![
                mount("/proc", "proc", "proc", &["nosuid"]),
                mount(
                    "/etc/hosts",
                    "bind",
                    hosts.to_str().unwrap(),
                    &["rbind", "rprivate", "rw"],
                ),
                mount(
                    "/etc/resolv.conf",
                    "bind",
                    hosts.to_str().unwrap(),
                    &["rbind", "ro"],
                ),
                mount(
                    "/dev/shm",
                    "bind",
                    shm.to_str().unwrap(),
                    &["rbind", "rprivate", "rw"],
                ),
            ],
            "c1",
        )
        .unwrap();
        let types: Vec<_> = c.mounts.iter().map(|m| m.fstype.as_str()).collect();
        assert_eq!(types, ["proc", POD_SHM]);
        assert_eq!(c.mounts[1].options, ["rw"]);
        assert_eq!(c.files.len(), 2);
        assert_eq!(c.files[0].data, b"127.0.0.1 localhost\n");
        assert!(!c.files[0].readonly);
        assert!(c.files[1].readonly);
    }

    #[test]
    fn binds_of_directories_become_volumes_in_order() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let c = convert(
            vec![
                mount("/proc", "proc", "proc", &[]),
                mount("/a", "bind", a.path().to_str().unwrap(), &["rbind", "rw"]),
                mount(
                    "/b",
                    "none",
                    b.path().to_str().unwrap(),
                    &["bind", "ro", "rprivate"],
                ),
            ],
            "c1",
        )
        .unwrap();
        let volumes: Vec<_> = c.mounts.iter().filter(|m| m.fstype == VOLUME).collect();
        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[0].source.as_deref(), Some("c1/0"));
        assert_eq!(volumes[1].source.as_deref(), Some("c1/1"));
        assert_eq!(volumes[1].options, ["ro"]);
        let host: Vec<_> = c
            .volumes
            .iter()
            .map(|v| (v.host.as_path(), v.readonly))
            .collect();
        assert_eq!(host, [(a.path(), false), (b.path(), true)]);
    }

    #[test]
    fn large_files_other_binds_and_made_up_types_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; MAX_FILE + 1]).unwrap();
        let cases = [
            mount("/null", "bind", "/dev/null", &["rbind"]),
            mount("/data", VOLUME, dir.path().to_str().unwrap(), &[]),
            mount("/big", "bind", big.to_str().unwrap(), &["rbind"]),
            mount("/x", "bind", "/no/such/file", &["rbind"]),
            mount("/dev/shm", POD_SHM, "", &[]),
            mount("/mnt", "ext4", "/dev/sda", &[]),
        ];
        for m in cases {
            let what = format!("{} {:?}", m.destination, m.fstype);
            assert!(convert(vec![m], "c1").is_err(), "{what}");
        }
    }
}
