//! The container's microVM: `vessel run` with the guest kernel, the initramfs of
//! [`crate::initramfs`] and a vsock device whose `<uds>_1024` listener the shim holds; the
//! agent's connection; stopping the VM and removing its files.

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use agent::protocol::{Limits, AGENT_PORT, VOLUMES_TAG};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::ShimConfig;
use crate::initramfs::INIT_PATH;
use crate::podnet::PodNic;
use crate::volumes::{self, Volume, VolumeError};

/// The guest's vsock context ID: vessel's vsock is a Unix-socket device, so CIDs need not
/// differ between VMs.
const GUEST_CID: u32 = 3;
/// The longest vsock socket path vessel takes (docs/vsock.md).
const MAX_UDS: usize = 96;
/// Where the VMs' vsock sockets are: bundle paths are too long for a socket's address
/// (containerd's CRI names bundles after 64-digit ids).
const SOCKET_DIR: &str = "/run/vessel-shim";

/// A balloon that takes nothing and is there for free page reporting: the guest hands the
/// memory it frees back to the host (docs/balloon.md), so a pod's host memory follows what
/// its guest uses rather than the most it ever used.
const FREE_PAGE_REPORTING: &str = "amount_mib=0,free_page_reporting=on";

/// What a VM needs besides a container's memory limit: the guest kernel, the agent, and
/// the initramfs with the container's root, all in the guest's memory.
const GUEST_BASE_MIB: u64 = 128;

/// The VM for a container with `limits`: the configured size, grown to hold a memory
/// limit on top of [`GUEST_BASE_MIB`] and as many vCPUs as a CPU quota allows (one on
/// kvm_pvm hosts, where the nested-host profile boots one); (MiB, vCPUs).
pub fn size(config: &ShimConfig, limits: Option<&Limits>, nested: bool) -> (u64, u32) {
    let mib = u64::from(config.memory_mib);
    let limit_mib = limits
        .and_then(|l| l.memory_max)
        .map(|b| b.div_ceil(1 << 20) + GUEST_BASE_MIB);
    let memory = limit_mib.map_or(mib, |l| l.max(mib));
    let quota_cpus = limits
        .and_then(|l| l.cpu_max)
        .map(|(quota, period)| u32::try_from(quota.div_ceil(period)).unwrap_or(u32::MAX));
    let cpus = match quota_cpus {
        _ if nested => 1,
        Some(c) => c.clamp(config.cpus, 255),
        None => config.cpus,
    };
    (memory, cpus)
}

/// Errors running the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("the vsock socket path {0} is longer than {MAX_UDS} bytes")]
    UdsTooLong(PathBuf),
    #[error("start {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
    #[error("the VM ended before its agent connected ({status}); its console: {log}")]
    EndedEarly { status: String, log: String },
    #[error("the VM's agent did not connect within {0:?}")]
    Timeout(Duration),
    #[error("share host directories with the VM: {0}")]
    Volumes(#[from] VolumeError),
}

/// The files of one VM: in the bundle directory, but for the vsock sockets, which are in
/// [`SOCKET_DIR`] under a name derived from the bundle's path.
#[derive(Debug, Clone)]
pub struct VmFiles {
    pub initramfs: PathBuf,
    pub uds: PathBuf,
    pub agent_listener: PathBuf,
    pub console_log: PathBuf,
    pub pid_file: PathBuf,
    /// The VM's virtio-fs share of host directories ([`crate::volumes`]), beside the
    /// sockets.
    pub volumes: PathBuf,
}

impl VmFiles {
    pub fn in_dir(dir: &Path) -> Self {
        let key = dir.as_os_str().as_encoded_bytes();
        let name = format!("{:016x}.vsock", fnv1a(key));
        let uds = Path::new(SOCKET_DIR).join(name);
        VmFiles {
            initramfs: dir.join("vm-initramfs.cpio"),
            agent_listener: PathBuf::from(format!("{}_{AGENT_PORT}", uds.display())),
            uds,
            console_log: dir.join("vm-console.log"),
            pid_file: dir.join("vessel.pid"),
            volumes: Path::new(SOCKET_DIR).join(format!("{:016x}.volumes", fnv1a(key))),
        }
    }

    /// Removes every file the VM left (what does not exist is fine).
    pub fn remove(&self) {
        for f in [
            &self.initramfs,
            &self.uds,
            &self.agent_listener,
            &self.pid_file,
        ] {
            let _ = std::fs::remove_file(f);
        }
        volumes::remove(&self.volumes);
    }
}

/// FNV-1a, 64 bits: a name for a bundle's sockets that every shim process computes alike.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What a VM may get besides its size: a share of host directories, a pod's network.
#[derive(Default, Clone, Copy)]
pub struct BootExtras<'a> {
    /// (the container's id, its volumes).
    pub share: Option<(&'a str, &'a [Volume])>,
    /// (the pod's network namespace, its interface, already [`crate::podnet::connect`]ed).
    pub net: Option<(&'a Path, &'a PodNic)>,
}

/// A running `vessel run`.
pub struct Vm {
    child: Child,
    listener: UnixListener,
    pub files: VmFiles,
}

impl Vm {
    /// Starts the VM, sized for `limits` ([`size`]); the agent connects later
    /// ([`Vm::accept_agent`]). With `extras.share`, (a container's id, its volumes), the VM
    /// gets a virtio-fs share of host directories, those already bound in it; with
    /// `extras.net`, (a network namespace, its connected pod interface), vessel runs in that
    /// namespace with a NIC on its tap.
    pub fn boot(
        config: &ShimConfig,
        files: VmFiles,
        limits: Option<&Limits>,
        extras: BootExtras<'_>,
    ) -> Result<Vm, VmError> {
        let (memory_mib, cpus) = size(config, limits, ShimConfig::nested_host());
        if files.uds.as_os_str().len() > MAX_UDS {
            return Err(VmError::UdsTooLong(files.uds));
        }
        std::fs::create_dir_all(SOCKET_DIR).map_err(|e| VmError::Io(SOCKET_DIR.into(), e))?;
        let _ = std::fs::remove_file(&files.agent_listener);
        let listener = UnixListener::bind(&files.agent_listener)
            .map_err(|e| VmError::Io(files.agent_listener.clone(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| VmError::Io(files.agent_listener.clone(), e))?;
        let log = File::create(&files.console_log)
            .map_err(|e| VmError::Io(files.console_log.clone(), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| VmError::Io(files.console_log.clone(), e))?;
        let mut cmdline = format!("{} rdinit={INIT_PATH}", config.kernel_cmdline());
        let mut vmm = match extras.net {
            Some((netns, nic)) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", netns.display()))
                    .arg(&config.vessel)
                    .arg("run")
                    .args(["--nic", &nic.nic_arg()]);
                cmdline.push(' ');
                cmdline.push_str(&nic.kernel_arg());
                c
            }
            None => {
                let mut c = Command::new(&config.vessel);
                c.arg("run");
                c
            }
        };
        if let Some((id, binds)) = extras.share {
            volumes::prepare(&files.volumes)?;
            volumes::bind_all(&files.volumes, id, binds)?;
            let mut share = files.volumes.clone().into_os_string();
            share.push(format!(":{VOLUMES_TAG}"));
            vmm.arg("--share").arg(share);
            cmdline.push_str(" vessel.volumes");
        }
        let child = vmm
            .arg("--kernel")
            .arg(&config.kernel)
            .arg("--initrd")
            .arg(&files.initramfs)
            .args(["--memory", &format!("{memory_mib}M")])
            .args(["--cpus", &cpus.to_string()])
            .args(["--cmdline", &cmdline])
            .arg("--vsock")
            .arg(format!("cid={GUEST_CID},uds={}", files.uds.display()))
            .args(["--balloon", FREE_PAGE_REPORTING])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| VmError::Spawn(config.vessel.clone(), e))?;
        let _ = std::fs::write(&files.pid_file, child.id().to_string());
        Ok(Vm {
            child,
            listener,
            files,
        })
    }

    /// Another handle of the agent's listener (exec'd processes connect there too).
    pub fn listener(&self) -> Result<UnixListener, VmError> {
        let listener = self.listener.try_clone();
        listener.map_err(|e| VmError::Io(self.files.agent_listener.clone(), e))
    }

    /// The VMM's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the agent's connection, for at most `timeout`, or until the VM ends.
    pub fn accept_agent(&mut self, timeout: Duration) -> Result<UnixStream, VmError> {
        let start = Instant::now();
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream
                        .set_nonblocking(false)
                        .map_err(|e| VmError::Io(self.files.agent_listener.clone(), e))?;
                    return Ok(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(VmError::Io(self.files.agent_listener.clone(), e)),
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = console_tail(&self.files.console_log);
                return Err(VmError::EndedEarly {
                    status: status.to_string(),
                    log,
                });
            }
            if start.elapsed() > timeout {
                return Err(VmError::Timeout(timeout));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `grace` for the VM to power off, then kills it; removes its files.
    pub fn stop(mut self, grace: Duration) {
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = self.child.try_wait() {
            tracing::info!(
                "vessel {} did not power off in {grace:?}: killing it",
                self.child.id()
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.files.remove();
    }
}

/// The end of the VM's console log, for error messages.
pub fn console_tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let tail = text
        .get(text.len().saturating_sub(2000)..)
        .unwrap_or_default();
    String::from_utf8_lossy(tail).into_owned()
}

/// Removes the ttrpc socket a killed shim left: the one the bundle's `address` file names
/// (the shim unlinks it itself when it shuts down). Only a socket nobody listens on goes:
/// a pod's shim that still runs keeps its socket when one of its containers' bundles is
/// cleaned up.
pub fn remove_dead_shims_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let Some(path) = address.trim().strip_prefix("unix://") else {
        return;
    };
    let path = Path::new(path);
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    let refused = matches!(
        UnixStream::connect(path),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    );
    if is_socket && refused {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!("remove the dead shim's socket {}: {e}", path.display());
        }
    }
}

/// The names (`comm`) of a VMM the shim started: `vessel` until it executes `vessel-vmm`.
const VMM_NAMES: [&str; 2] = ["vessel", "vessel-vmm"];

/// Kills the VMM a dead shim left in `dir` (its pid file) and removes the VM's files.
pub fn clean_up_after(dir: &Path) {
    let files = VmFiles::in_dir(dir);
    let pid = std::fs::read_to_string(&files.pid_file).ok();
    if let Some(pid) = pid
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|&p| p > 1)
    {
        // Only a vessel process: the pid may have been reused. `vessel run` executes
        // `vessel-vmm` in the same process.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if VMM_NAMES.contains(&comm.trim()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    files.remove();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cri_bundles_sockets_fit_a_socket_address_and_differ_per_bundle() {
        let state = "/run/containerd/io.containerd.runtime.v2.task/k8s.io";
        let a = VmFiles::in_dir(&Path::new(state).join("a".repeat(64)));
        let b = VmFiles::in_dir(&Path::new(state).join("b".repeat(64)));
        assert!(a.agent_listener.as_os_str().len() <= MAX_UDS, "{a:?}");
        assert!(a.uds.starts_with(SOCKET_DIR));
        assert_ne!(a.uds, b.uds);
        let again = VmFiles::in_dir(&Path::new(state).join("a".repeat(64)));
        assert_eq!(a.uds, again.uds, "the delete action finds them again");
        assert!(a.initramfs.starts_with(state));
    }

    #[test]
    fn a_dead_shims_clean_up_kills_its_vmm_removes_its_files_and_spares_other_processes() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        // A stand-in VMM: sleep, started through a link named `vessel-vmm` (its comm).
        let vessel = dir.path().join("vessel-vmm");
        std::os::unix::fs::symlink("/bin/sleep", &vessel).unwrap();
        let mut vmm = std::process::Command::new(&vessel)
            .arg("600")
            .spawn()
            .unwrap();
        let files = VmFiles::in_dir(dir.path());
        std::fs::create_dir_all(SOCKET_DIR).unwrap();
        for f in [&files.initramfs, &files.uds, &files.agent_listener] {
            std::fs::write(f, b"").unwrap();
        }
        std::fs::write(&files.pid_file, vmm.id().to_string()).unwrap();
        // As the VMM is once it runs: under its name (not yet, for a moment, if the spawn
        // returned before the exec).
        let comm_path = format!("/proc/{}/comm", vmm.id());
        let comm = || std::fs::read_to_string(&comm_path).unwrap_or_default();
        let named = std::time::Instant::now() + Duration::from_secs(5);
        while comm().trim() != "vessel-vmm" && std::time::Instant::now() < named {
            std::thread::sleep(Duration::from_millis(10));
        }
        let comm = comm();
        clean_up_after(dir.path());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            match vmm.try_wait().unwrap() {
                Some(status) => break status,
                None if std::time::Instant::now() > deadline => {
                    let _ = vmm.kill();
                    panic!("the VMM (comm {comm:?}) outlived the clean-up");
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        for f in [
            &files.initramfs,
            &files.uds,
            &files.agent_listener,
            &files.pid_file,
        ] {
            assert!(!f.exists(), "{f:?} is left");
        }
        // A pid file naming a process that is not vessel (a reused pid): left alone.
        let mut other = std::process::Command::new("/bin/sleep")
            .arg("600")
            .spawn()
            .unwrap();
        std::fs::write(&files.pid_file, other.id().to_string()).unwrap();
        clean_up_after(dir.path());
        std::thread::sleep(Duration::from_millis(100));
        assert!(other.try_wait().unwrap().is_none(), "a stranger was killed");
        other.kill().unwrap();
        other.wait().unwrap();
        // Garbage in the pid file, or pid 1: nothing is killed, the files still go.
        for text in ["not a pid", "1", "-5"] {
            std::fs::write(&files.pid_file, text).unwrap();
            clean_up_after(dir.path());
            assert!(!files.pid_file.exists());
        }
    }

    #[test]
    fn a_dead_shims_socket_goes_and_a_live_ones_stays() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("shim.sock");
        std::fs::write(
            dir.path().join("address"),
            format!("unix://{}", socket.display()),
        )
        .unwrap();
        let listener = UnixListener::bind(&socket).unwrap();
        remove_dead_shims_socket(dir.path());
        assert!(socket.exists(), "a listening shim's socket was removed");
        drop(listener);
        remove_dead_shims_socket(dir.path());
        assert!(!socket.exists(), "the dead shim's socket is left");
        // A file that is not a socket, or an address of another kind: left alone.
        std::fs::write(&socket, b"data").unwrap();
        remove_dead_shims_socket(dir.path());
        assert!(socket.exists());
        std::fs::write(dir.path().join("address"), socket.display().to_string()).unwrap();
        std::fs::remove_file(&socket).unwrap();
        let stale = UnixListener::bind(&socket).unwrap();
        drop(stale);
        remove_dead_shims_socket(dir.path());
        assert!(socket.exists(), "an address without unix:// named it");
    }

    #[test]
    fn a_vm_grows_to_hold_a_containers_limits() {
        let config: ShimConfig = toml::from_str(
            "vessel = \"/v\"\nkernel = \"/k\"\ninitrd = \"/i\"\nagent = \"/a\"\n\
             memory_mib = 256\ncpus = 1\n",
        )
        .unwrap();
        let limits = |memory_max, cpu_max| Limits {
            memory_max,
            memory_low: None,
            cpu_max,
        };
        assert_eq!(size(&config, None, false), (256, 1));
        let small = limits(Some(64 << 20), Some((50_000, 100_000)));
        assert_eq!(size(&config, Some(&small), false), (256, 1));
        let big = limits(Some(1 << 30), Some((250_000, 100_000)));
        assert_eq!(size(&config, Some(&big), false), (1024 + 128, 3));
        assert_eq!(
            size(&config, Some(&big), true),
            (1024 + 128, 1),
            "kvm_pvm: one vCPU"
        );
    }
}
