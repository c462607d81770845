//! `vessel vhost-user-blk` / `vessel vhost-user-net`: serve one of vessel's virtio devices
//! (the same device models `vessel run` uses) to another VMM — QEMU, Cloud Hypervisor —
//! over a vhost-user unix socket.
//!
//! Prints `vessel: vhost-user-KIND listening on PATH` to stderr once the socket listens,
//! serves one frontend at a time and accepts the next when it disconnects.
//! Exit status: 0 after SIGINT or SIGTERM, 2 bad arguments (including a disk that cannot
//! be opened), 1 other errors.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use clap::Args;
use vmm::DiskConfig;

use crate::run_cli::EXIT_USAGE;

const EXIT_ERROR: i32 = 1;
/// Serial number GET_ID answers when the disk spec has no id=.
const DEFAULT_SERIAL: &str = "vessel-disk0";

#[derive(Debug, Args)]
pub struct BlkArgs {
    /// Unix socket to listen on (a stale socket at PATH is replaced).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// The disk: IMG[,readonly=on][,format=raw|qcow2|vdi|vhd|vmdk|vhdx][,id=SERIAL]
    /// [,allow-external-backing=on], as
    /// `vessel run --disk` (the format is detected from the content unless given).
    #[arg(long, value_parser = parse_disk)]
    disk: DiskConfig,
    #[command(flatten)]
    confine: crate::confinement::ConfineArgs,
}

#[derive(Debug, Args)]
pub struct NetArgs {
    /// Unix socket to listen on (a stale socket at PATH is replaced).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// The network: MODE[,mac=52:54:..][,forward=tcp:127.0.0.1:2222-:22]
    /// [,host-loopback=on|off], as `vessel run --nic`; MODE is nat, natnet:NAME,
    /// internal:NAME, hostonly:NAME, bridged:IFACE or tap:NAME. The guest's MAC is the
    /// frontend's.
    #[arg(long, value_parser = parse_nic)]
    nic: net::NicConfig,
    #[command(flatten)]
    confine: crate::confinement::ConfineArgs,
}

/// A backend has no rate limiter: `rate=`/`iops=` belong to `vessel run`.
const NO_LIMITS: &str = "rate limits are not available in a vhost-user backend (the frontend VMM can limit its device); remove rate=/iops=";

fn parse_nic(s: &str) -> Result<net::NicConfig, String> {
    let nic = net::parse_nic(s).map_err(|e| e.to_string())?;
    if nic.rx_limit.limits() || nic.tx_limit.limits() {
        return Err(NO_LIMITS.into());
    }
    Ok(nic)
}

fn parse_disk(s: &str) -> Result<DiskConfig, String> {
    let disk = crate::run_cli::parse_disk(s)?;
    if disk.rate_limit.limits() {
        return Err(NO_LIMITS.into());
    }
    Ok(disk)
}

/// Block SIGINT and SIGTERM in this thread (and the threads it starts) and return a
/// signalfd that becomes readable when one arrives: the server's stop fd.
fn stop_signals() -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; zeroed and then initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame for all four calls.
    let blocked = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if blocked != 0 {
        return Err(io::Error::from_raw_os_error(blocked));
    }
    // SAFETY: `set` is initialised; -1 asks for a new fd.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Confine the backend once it listens (crates/confine): only the served disk or network
/// directory and the socket's directory stay reachable; this thread takes the vhost-user
/// server role, and each connection's worker its own.
fn confine_server(socket: &Path, files: &confine::FsRules) -> Result<(), String> {
    let mut files = files.clone();
    match socket.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => files.allow_write(dir),
        _ => files.allow_write("."),
    }
    confine::lock_down(&files).map_err(|e| e.to_string())?;
    confine::enter(confine::Role::VhostUserMain).map_err(|e| e.to_string())
}

/// Listen on `socket` and serve `backend` until SIGINT / SIGTERM.
fn serve(kind: &str, socket: &Path, backend: vhost_user::Backend, files: &confine::FsRules) -> i32 {
    let stop = match stop_signals() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("vessel: error: setting up signal handling: {e}");
            return EXIT_ERROR;
        }
    };
    let listener = match vhost_user::bind(socket) {
        Ok(l) => l,
        Err(
            e
            @ (vhost_user::ServerError::NotASocket { .. } | vhost_user::ServerError::InUse { .. }),
        ) => {
            eprintln!("vessel: error: --socket {e}");
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("vessel: error: {e}");
            return EXIT_ERROR;
        }
    };
    if let Err(e) = confine_server(socket, files) {
        eprintln!("vessel: error: confining the backend: {e}");
        return EXIT_ERROR;
    }
    eprintln!(
        "vessel: vhost-user-{kind} listening on {}",
        socket.display()
    );
    let result = backend.serve(&listener, stop.as_fd());
    drop(listener);
    let _ = std::fs::remove_file(socket);
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vessel: error: {e}");
            EXIT_ERROR
        }
    }
}

/// The backend's confinement, from its `--seccomp`, `--landlock` and `--user` flags (the
/// same as `vessel run`'s, on by default); applied by [`confine_server`] once it listens.
fn set_policy(args: &crate::confinement::ConfineArgs) -> Result<(), String> {
    crate::confinement::set_policy(args).map_err(|e| format!("{e:#}"))
}

pub fn run_blk(args: BlkArgs) -> i32 {
    if let Err(e) = set_policy(&args.confine) {
        eprintln!("vessel: error: {e}");
        return EXIT_ERROR;
    }
    let d = &args.disk;
    let serial = d.id.clone().unwrap_or_else(|| DEFAULT_SERIAL.into());
    if serial.len() > virtio::blk::SERIAL_LEN {
        eprintln!(
            "vessel: error: disk id '{serial}' is longer than the 20 bytes virtio-blk allows"
        );
        return EXIT_USAGE;
    }
    let opts = block::OpenOptions {
        read_only: d.read_only,
        format: d.format,
        allow_external_backing: d.allow_external_backing,
    };
    let image = match block::open(&d.path, &opts) {
        Ok(image) => image,
        Err(e) => {
            eprintln!("vessel: error: disk {}: {e}", d.path.display());
            return EXIT_USAGE;
        }
    };
    if image.size() % virtio::blk::SECTOR_SIZE != 0 {
        eprintln!(
            "vessel: error: disk {}: its size ({} bytes) is not a multiple of 512-byte sectors",
            d.path.display(),
            image.size()
        );
        return EXIT_USAGE;
    }
    let device = virtio::blk::Block::new(image, &serial);
    match vhost_user::Backend::new(Box::new(device), 1, None) {
        Ok(backend) => {
            let mut files = confine::FsRules::default();
            if d.read_only {
                files.allow_read(&d.path);
            } else {
                files.allow_write(&d.path);
            }
            serve("blk", &args.socket, backend, &files)
        }
        Err(e) => {
            eprintln!("vessel: error: {e}");
            EXIT_ERROR
        }
    }
}

pub fn run_net(args: NetArgs) -> i32 {
    if let Err(e) = set_policy(&args.confine) {
        eprintln!("vessel: error: {e}");
        return EXIT_ERROR;
    }
    // Opened before SIGINT/SIGTERM are blocked: a helper process (passt) must not inherit
    // the blocked mask.
    let backend = match net::open_backend(&args.nic) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("vessel: error: --nic: {e}");
            return EXIT_ERROR;
        }
    };
    let mac = args.nic.mac.unwrap_or_else(|| net::default_mac(0));
    let (device, _link) = virtio::net::Net::new(backend, mac);
    let fd = device.backend_fd();
    // GET_QUEUE_NUM counts queue pairs for virtio-net.
    match vhost_user::Backend::new(Box::new(device), 1, Some(fd)) {
        Ok(backend) => {
            let mut files = confine::FsRules::default();
            match &args.nic.mode {
                net::NicMode::Internal(name) => files.allow_write(net::switch::switch_dir(name)),
                net::NicMode::NatNetwork(name) => files.allow_write(net::natnet::natnet_dir(name)),
                _ => {}
            }
            serve("net", &args.socket, backend, &files)
        }
        Err(e) => {
            eprintln!("vessel: error: {e}");
            EXIT_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_refuse_rate_limits_they_cannot_enforce() {
        assert!(parse_nic("internal:lab").is_ok());
        assert_eq!(parse_nic("internal:lab,rate=1M").unwrap_err(), NO_LIMITS);
        assert!(parse_disk("/a.img").is_ok());
        assert_eq!(parse_disk("/a.img,iops=10").unwrap_err(), NO_LIMITS);
    }
}
