//! The state file: JSON with a magic string and a format version, read back as untrusted
//! input (size-capped, versioned, every count bounded before use).

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::devices::DeviceStates;
use super::saved_nic::{SavedNic, MAX_NICS};
use super::vcpu_state::{VcpuState, MAX_MSRS};
use super::vm_state::VmState;
use super::SnapshotError;

pub const SNAPSHOT_MAGIC: &str = "vessel-vm-snapshot";
/// 2: virtio-net and virtio-console saved (NICs and console in the machine, each virtio
/// function with its device model's state).
pub const SNAPSHOT_VERSION: u32 = 2;
/// A state file is a few tens of KiB per vCPU; anything above this is not one of ours.
pub const MAX_STATE_FILE_BYTES: u64 = 64 << 20;

/// The shape of the machine, enough to build the same VM again before its state is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineState {
    /// Guest RAM in bytes.
    pub memory: u64,
    pub cpus: u8,
    /// Whether the VM has KVM's in-kernel PIT.
    pub pit: bool,
    /// virtio-blk disks, in PCI slot order (reopened on load: they must still be there).
    pub disks: Vec<SavedDisk>,
    /// virtio-net interfaces after the disks (their backends are opened again on load).
    pub nics: Vec<SavedNic>,
    /// A virtio-rng device after the NICs.
    pub rng: bool,
    /// A virtio-console after the rng, its output appended to this file.
    pub console: Option<std::path::PathBuf>,
    /// A virtio-vsock after the console: its guest CID and host socket (bound again on
    /// load; the guest's connections are reset).
    #[serde(default)]
    pub vsock: Option<crate::VsockConfig>,
    /// A virtio-balloon after the vsock.
    #[serde(default)]
    pub balloon: Option<virtio::balloon::BalloonConfig>,
    /// virtio-fs shares last, each with its virtiofsd's saved state in its device state.
    /// Only what the guest sees is recorded: the host directories are never read from a
    /// state file, the VM's definition gives them again on load.
    #[serde(default)]
    pub shares: Vec<SavedShare>,
}

/// A share as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedShare {
    pub tag: String,
    pub readonly: bool,
}

/// Most shares a snapshot may list.
pub const MAX_SHARES: usize = 16;

/// A disk as the VM had it configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDisk {
    pub path: std::path::PathBuf,
    pub read_only: bool,
    pub id: Option<String>,
    /// Image format name (`raw`, `qcow2`, ...); detected when absent.
    pub format: Option<String>,
}

/// Most disks a snapshot may list (the API allows 64).
pub const MAX_DISKS: usize = 64;

#[derive(Serialize, Deserialize)]
pub struct VmSnapshot {
    pub magic: String,
    pub version: u32,
    pub machine: MachineState,
    pub vm: VmState,
    pub vcpus: Vec<VcpuState>,
    pub devices: DeviceStates,
}

/// Only the fields that say whether the rest can be read.
#[derive(Deserialize)]
struct Header {
    magic: String,
    version: u32,
}

impl VmSnapshot {
    /// Checks everything that does not need KVM: version, machine shape, counts.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        if self.magic != SNAPSHOT_MAGIC {
            return Err(SnapshotError::Invalid("not a vessel VM snapshot".into()));
        }
        if self.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version {
                found: self.version,
            });
        }
        let cpus = self.machine.cpus;
        if cpus == 0 || cpus > crate::config::MAX_CPUS {
            return Err(SnapshotError::Invalid(format!(
                "{cpus} vCPUs (1 to {} are possible)",
                crate::config::MAX_CPUS
            )));
        }
        if self.vcpus.len() != usize::from(cpus) {
            return Err(SnapshotError::Invalid(format!(
                "the machine has {cpus} vCPUs but {} vCPU states are saved",
                self.vcpus.len()
            )));
        }
        arch::memory_map::RamLayout::new(self.machine.memory)
            .map_err(|e| SnapshotError::Invalid(format!("memory size: {e}")))?;
        if let Some(id) = self.vcpus.iter().position(|v| v.msrs.len() > MAX_MSRS) {
            return Err(SnapshotError::Invalid(format!(
                "vCPU {id} lists more than {MAX_MSRS} MSRs"
            )));
        }
        if self.vm.pit.is_some() != self.machine.pit {
            return Err(SnapshotError::Invalid(
                "the PIT state does not match whether the machine has a PIT".into(),
            ));
        }
        if self.machine.disks.len() > MAX_DISKS {
            return Err(SnapshotError::Invalid(format!(
                "{} disks (at most {MAX_DISKS})",
                self.machine.disks.len()
            )));
        }
        if self.machine.nics.len() > MAX_NICS {
            return Err(SnapshotError::Invalid(format!(
                "{} network interfaces (at most {MAX_NICS})",
                self.machine.nics.len()
            )));
        }
        if let Some(v) = &self.machine.vsock {
            virtio::vsock::check_config(v.cid, &v.uds)
                .map_err(|e| SnapshotError::Invalid(format!("vsock: {e}")))?;
        }
        self.check_shares()?;
        self.check_device_set()?;
        for nic in &self.machine.nics {
            nic.to_config()?;
        }
        for disk in &self.machine.disks {
            if let Some(name) = &disk.format {
                name.parse::<block::Format>().map_err(|e| {
                    SnapshotError::Invalid(format!("disk {}: {e}", disk.path.display()))
                })?;
            }
        }
        self.vm.validate()?;
        self.devices.validate()
    }

    /// The saved virtio functions are the machine's devices, in slot order: disks (type
    /// 2), NICs (1), rng (4), console (3), vsock (19), balloon (5).
    /// At most [`MAX_SHARES`] shares with valid, distinct tags.
    fn check_shares(&self) -> Result<(), SnapshotError> {
        let shares = &self.machine.shares;
        if shares.len() > MAX_SHARES {
            return Err(SnapshotError::Invalid(format!(
                "{} shares (at most {MAX_SHARES})",
                shares.len()
            )));
        }
        for (i, share) in shares.iter().enumerate() {
            vhost_user::fs::check_tag(&share.tag)
                .map_err(|e| SnapshotError::Invalid(e.to_string()))?;
            if shares[..i].iter().any(|s| s.tag == share.tag) {
                return Err(SnapshotError::Invalid(format!(
                    "share tag {:?} is saved twice",
                    share.tag
                )));
            }
        }
        Ok(())
    }

    fn check_device_set(&self) -> Result<(), SnapshotError> {
        let m = &self.machine;
        let expected: Vec<u16> = std::iter::repeat_n(2, m.disks.len())
            .chain(std::iter::repeat_n(1, m.nics.len()))
            .chain(m.rng.then_some(4))
            .chain(m.console.is_some().then_some(3))
            .chain(
                m.vsock
                    .is_some()
                    .then_some(virtio::vsock::DEVICE_TYPE_VSOCK),
            )
            .chain(m.balloon.is_some().then_some(5))
            .chain(std::iter::repeat_n(
                virtio::external::DEVICE_TYPE_FS,
                m.shares.len(),
            ))
            .collect();
        if self.devices.virtio.len() != expected.len() {
            return Err(SnapshotError::Invalid(format!(
                "the machine has {} virtio devices but {} device states are saved",
                expected.len(),
                self.devices.virtio.len()
            )));
        }
        for (slot, (state, want)) in self.devices.virtio.iter().zip(expected).enumerate() {
            if state.device_type != want {
                return Err(SnapshotError::Invalid(format!(
                    "virtio function {}: a saved device of type {} where the machine has type {want}",
                    slot + 1,
                    state.device_type
                )));
            }
        }
        Ok(())
    }

    /// The disks the file names are opened read-write on load, and the file is untrusted:
    /// each must exist, not be a symbolic link, and be a regular file or a block device
    /// (never a FIFO, a device like /dev/zero or a directory).
    pub fn check_disk_files(&self) -> Result<(), SnapshotError> {
        for disk in &self.machine.disks {
            block::check_disk_path(&disk.path)
                .map_err(|e| SnapshotError::Invalid(format!("disk: {e}")))?;
        }
        if let Some(path) = &self.machine.console {
            super::saved_nic::check_console_file(path)?;
        }
        Ok(())
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `snapshot` to `path`, a new file (nothing, not even a symlink, may be there). A
/// state larger than [`read_state_file`] reads back ([`MAX_STATE_FILE_BYTES`]; virtiofsd
/// states of many shares can be) is refused before anything is written.
pub fn write_state_file(snapshot: &VmSnapshot, path: &Path) -> Result<(), SnapshotError> {
    write_state_file_within(snapshot, path, MAX_STATE_FILE_BYTES)
}

/// [`write_state_file`] of a state at most `max` bytes long.
fn write_state_file_within(
    snapshot: &VmSnapshot,
    path: &Path,
    max: u64,
) -> Result<(), SnapshotError> {
    let text = serde_json::to_vec(snapshot)
        .map_err(|e| SnapshotError::Invalid(format!("cannot encode: {e}")))?;
    let size = text.len() as u64;
    if size > max {
        return Err(SnapshotError::StateTooLarge { size, max });
    }
    let file = super::output::create_new(path)?;
    let mut writer = std::io::BufWriter::new(file);
    std::io::Write::write_all(&mut writer, &text).map_err(io_err(path))?;
    let file = writer
        .into_inner()
        .map_err(|e| io_err(path)(e.into_error()))?;
    file.sync_all().map_err(io_err(path))
}

/// Parses and validates a state file's bytes.
pub fn parse_state(bytes: &[u8]) -> Result<VmSnapshot, SnapshotError> {
    let header: Header = serde_json::from_slice(bytes)
        .map_err(|e| SnapshotError::Invalid(format!("not a vessel state file: {e}")))?;
    if header.magic != SNAPSHOT_MAGIC {
        return Err(SnapshotError::Invalid("not a vessel VM snapshot".into()));
    }
    if header.version != SNAPSHOT_VERSION {
        return Err(SnapshotError::Version {
            found: header.version,
        });
    }
    let snapshot: VmSnapshot =
        serde_json::from_slice(bytes).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    snapshot.validate()?;
    Ok(snapshot)
}

/// Reads and validates the state file at `path` (at most [`MAX_STATE_FILE_BYTES`]).
pub fn read_state_file(path: &Path) -> Result<VmSnapshot, SnapshotError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    file.take(MAX_STATE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_STATE_FILE_BYTES {
        return Err(SnapshotError::Invalid(format!(
            "larger than {MAX_STATE_FILE_BYTES} bytes"
        )));
    }
    parse_state(&bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::snapshot::vcpu_state::MsrValue;
    use ::devices::Persist;

    fn vcpu() -> VcpuState {
        VcpuState {
            regs: Default::default(),
            sregs: Default::default(),
            xsave: Default::default(),
            xcrs: Default::default(),
            lapic: Default::default(),
            mp_state: Default::default(),
            vcpu_events: Default::default(),
            debugregs: Default::default(),
            msrs: vec![MsrValue {
                index: 0x10,
                data: 42,
            }],
        }
    }

    pub(crate) fn sample() -> VmSnapshot {
        let chip = |chip_id| kvm_bindings::kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        VmSnapshot {
            magic: SNAPSHOT_MAGIC.into(),
            version: SNAPSHOT_VERSION,
            machine: MachineState {
                memory: 128 << 20,
                cpus: 2,
                pit: false,
                disks: vec![],
                nics: vec![],
                rng: false,
                console: None,
                vsock: None,
                balloon: None,
                shares: vec![],
            },
            vm: VmState {
                pic_master: chip(0),
                pic_slave: chip(1),
                ioapic: chip(2),
                pit: None,
                clock: Default::default(),
            },
            vcpus: vec![vcpu(), vcpu()],
            devices: DeviceStates {
                serial: ::devices::serial::Serial::new(
                    vmm_sys_util::eventfd::EventFd::new(0).unwrap(),
                    Box::new(std::io::sink()),
                )
                .save(),
                i8042: ::devices::i8042::I8042::new(::devices::VmExit::new().unwrap()).save(),
                cmos: ::devices::cmos::Cmos::new(128 << 20, 0).save(),
                virtio: vec![],
            },
        }
    }

    fn encode(s: &VmSnapshot) -> Vec<u8> {
        serde_json::to_vec(s).unwrap()
    }

    #[test]
    fn a_written_file_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write_state_file(&sample(), &path).unwrap();
        let back = read_state_file(&path).unwrap();
        assert_eq!(back.machine, sample().machine);
        assert_eq!(back.vcpus[1].msrs, sample().vcpus[1].msrs);
        assert_eq!(back.devices, sample().devices);
    }

    #[test]
    fn a_state_too_large_to_read_back_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let size = encode(&sample()).len() as u64;
        let err = write_state_file_within(&sample(), &path, size - 1).unwrap_err();
        let refused = matches!(err, SnapshotError::StateTooLarge { size: s, max }
            if s == size && max == size - 1);
        assert!(refused, "{err}");
        assert!(err.to_string().contains("nothing was written"), "{err}");
        assert!(!path.exists());
        write_state_file_within(&sample(), &path, size).unwrap();
    }

    #[test]
    fn truncated_files_are_refused() {
        let bytes = encode(&sample());
        for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(parse_state(&bytes[..cut]), Err(SnapshotError::Invalid(_))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn other_versions_and_magic_are_refused() {
        let mut s = sample();
        s.version = 1;
        assert!(matches!(
            parse_state(&encode(&s)),
            Err(SnapshotError::Version { found: 1 })
        ));
        let mut s = sample();
        s.magic = "firecracker".into();
        assert!(matches!(
            parse_state(&encode(&s)),
            Err(SnapshotError::Invalid(_))
        ));
    }

    #[test]
    fn vcpu_counts_and_memory_sizes_are_bounded() {
        let mut s = sample();
        s.machine.cpus = 3;
        assert!(parse_state(&encode(&s)).is_err(), "3 CPUs, 2 states");
        s.machine.cpus = 0;
        s.vcpus.clear();
        assert!(parse_state(&encode(&s)).is_err(), "no CPU");
        let mut s = sample();
        s.machine.memory = 0;
        assert!(parse_state(&encode(&s)).is_err(), "no memory");
        let mut s = sample();
        s.vcpus[0].msrs = vec![MsrValue { index: 0, data: 0 }; MAX_MSRS + 1];
        assert!(parse_state(&encode(&s)).is_err(), "too many MSRs");
    }

    #[test]
    fn legacy_device_states_are_versioned_and_unversioned_ones_are_read_as_version_1() {
        let mut v = serde_json::to_value(sample()).unwrap();
        for device in ["serial", "i8042", "cmos"] {
            v["devices"][device]
                .as_object_mut()
                .unwrap()
                .remove("version");
        }
        let back = parse_state(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back.devices, sample().devices);
        for device in ["serial", "i8042", "cmos"] {
            let mut v = serde_json::to_value(sample()).unwrap();
            v["devices"][device]["version"] = 9.into();
            let err = parse_state(&serde_json::to_vec(&v).unwrap())
                .map(|_| ())
                .unwrap_err();
            assert!(
                err.to_string().contains("state version 9 is not supported"),
                "{device}: {err}"
            );
        }
    }

    #[test]
    fn damaged_structures_and_device_state_are_refused() {
        let text = String::from_utf8(encode(&sample())).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["vcpus"][0]["regs"] = serde_json::json!([1, 2, 3]);
        assert!(parse_state(&serde_json::to_vec(&v).unwrap()).is_err());
        let mut s = sample();
        s.devices.serial.in_buffer = vec![0; 65];
        assert!(matches!(
            parse_state(&encode(&s)),
            Err(SnapshotError::LegacyDevice(_))
        ));
        let mut s = sample();
        s.devices.cmos.nvram = vec![0; 127];
        assert!(parse_state(&encode(&s)).is_err());
        let mut s = sample();
        s.machine.pit = true;
        assert!(parse_state(&encode(&s)).is_err(), "PIT flag without state");
        let mut s = sample();
        s.machine.rng = true;
        assert!(
            parse_state(&encode(&s)).is_err(),
            "a virtio-rng without its state"
        );
        let mut s = sample();
        s.machine.vsock = Some(crate::VsockConfig {
            cid: 1,
            uds: "/tmp/v.sock".into(),
        });
        let e = parse_state(&encode(&s)).err().unwrap().to_string();
        assert!(e.contains("vsock"), "a reserved CID: {e}");
        let mut s = sample();
        s.machine.disks = vec![
            SavedDisk {
                path: "/d".into(),
                read_only: false,
                id: None,
                format: None,
            };
            MAX_DISKS + 1
        ];
        assert!(parse_state(&encode(&s)).is_err(), "too many disks");
    }

    #[test]
    fn disks_named_by_the_file_must_be_plain_images() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.raw");
        std::fs::write(&image, vec![0u8; 4096]).unwrap();
        let link = dir.path().join("link.raw");
        std::os::unix::fs::symlink(&image, &link).unwrap();
        let disk = |path: &Path| SavedDisk {
            path: path.to_path_buf(),
            read_only: false,
            id: None,
            format: None,
        };
        let mut s = sample();
        s.machine.disks = vec![disk(&image)];
        s.check_disk_files().unwrap();
        for (bad, why) in [
            (link.as_path(), "symbolic link"),
            (Path::new("/dev/zero"), "character device"),
            (dir.path(), "directory"),
        ] {
            s.machine.disks = vec![disk(&image), disk(bad)];
            let err = s.check_disk_files().unwrap_err().to_string();
            assert!(
                err.contains(why) && err.contains(&*bad.to_string_lossy()),
                "{err}"
            );
        }
    }
}
