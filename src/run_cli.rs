//! `vessel run`: boot a guest in the foreground.

use std::path::PathBuf;

use clap::Args;
use vmm::{DiskConfig, ExitReason, SerialMode, Vm, VmConfig, VmError};

use crate::size::parse_size;

/// Exit status for invalid input (arguments, unreadable or invalid kernel/initrd).
pub const EXIT_USAGE: i32 = crate::exit::USAGE;
/// Exit status when the host cannot run the VM (KVM missing, out of memory, ...).
pub const EXIT_HOST_ERROR: i32 = crate::exit::HOST_ERROR;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Guest kernel: bzImage, ELF vmlinux (PVH when it carries the note) or multiboot ELF32.
    #[arg(long, required_unless_present_any = ["api_sock", "image", "incoming"])]
    kernel: Option<PathBuf>,
    /// Boot a disk image's own kernel, initrd and command line (an image in the store, or a
    /// raw/qcow2/vdi/vhd/vmdk/vhdx file), on a throw-away overlay that is the first disk.
    #[arg(long, conflicts_with_all = ["kernel", "initrd", "cmdline", "api_sock", "jail"])]
    image: Option<String>,
    /// With --image: the overlay's virtual size (default: the image's).
    #[arg(long, value_parser = parse_disk_size)]
    disk_size: Option<u64>,
    /// Words added at the end of the kernel command line.
    #[arg(long, default_value = "")]
    cmdline_append: String,
    /// Serve the REST API (Firecracker's shape) on this unix socket and wait for the VM's
    /// configuration and InstanceStart there, like `firecracker --api-sock`.
    /// The VM's configuration then comes from the API alone: the flags that configure a VM
    /// (--memory, --cpus, --cmdline, --pit, --disk, --nic...) are refused with it.
    #[arg(long, conflicts_with_all = ["kernel", "initrd", "disks", "nics", "rng", "vsock", "shares", "balloon", "cmdline_append", "memory", "cpus", "cmdline", "pit", "jail"])]
    api_sock: Option<PathBuf>,
    /// Wait for a VM migrated from another vessel (`PUT /migration/send`) on unix:PATH or
    /// tcp:HOST:PORT, then run it (docs/migration.md). The VM's shape and devices come from
    /// the stream: the flags that configure a VM are refused with it. With --api-sock the
    /// received VM is served on that socket (pause, snapshot, migrate it on...).
    #[arg(long, conflicts_with_all = ["kernel", "image", "initrd", "disks", "nics", "rng", "vsock", "shares", "balloon", "cmdline_append", "memory", "cpus", "cmdline", "pit", "jail", "console2"])]
    incoming: Option<String>,
    /// With --api-sock: the largest MMDS document `PUT/PATCH /mmds` accept, in bytes of
    /// its JSON (Firecracker's --mmds-size-limit).
    #[arg(long, requires = "api_sock", default_value_t = mmds::DEFAULT_SIZE_LIMIT)]
    mmds_size_limit: usize,
    /// Initial ramdisk (module 0 for multiboot kernels).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "console=ttyS0 reboot=k panic=-1")]
    cmdline: String,
    /// Guest memory with its unit, e.g. 512M or 2G (K, M, G: powers of 1024).
    #[arg(long, default_value = "512M", value_parser = parse_memory)]
    memory: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=i64::from(vmm::config::MAX_CPUS)))]
    cpus: u8,
    /// Serial console: stdio, file:PATH or none.
    #[arg(long, default_value = "stdio", value_parser = parse_serial)]
    serial: SerialMode,
    /// A virtio-blk disk: path=IMG[,readonly=on][,id=NAME][,format=raw|qcow2|vdi|vhd|vmdk|vhdx]
    /// [,allow-external-backing=on][,rate=BYTES_PER_S][,iops=N]
    /// (repeatable; a bare path works too). rate= limits bandwidth (10M = 10 MiB/s; K, M,
    /// G are binary), iops= requests per second (token buckets, as Firecracker's).
    #[arg(long = "disk", value_parser = parse_disk)]
    disks: Vec<DiskConfig>,
    /// A virtio-net interface: MODE[,mac=52:54:..][,forward=tcp:127.0.0.1:2222-:22]
    /// [,host-loopback=on|off][,rate=BYTES_PER_S][,rx-rate=..][,tx-rate=..]; MODE is nat,
    /// natnet:NAME, internal:NAME, hostonly:NAME, bridged:IFACE or tap:NAME (repeatable;
    /// docs/networking.md). rate= limits both directions (10M = 10 MiB/s), rx-rate= frames
    /// to the guest, tx-rate= frames from it. host-loopback=on (nat
    /// and natnet only; default off) lets the guest reach the host's 127.0.0.1 at the
    /// gateway 10.0.2.2; forward= without a host address listens on 127.0.0.1.
    #[arg(long = "nic", value_parser = parse_nic)]
    nics: Vec<net::NicConfig>,
    /// KVM's in-kernel i8254 PIT: auto gives it to multiboot kernels only (Linux does not
    /// use it on vessel's HW-reduced ACPI platform), on/off force it.
    #[arg(long, default_value = "auto", value_parser = parse_pit)]
    pit: vmm::PitMode,
    /// vessel's instruction emulator for what the host's KVM cannot emulate, with its
    /// user-mode `syscall` fix-up: auto enables it where /dev/kvm is kvm_pvm (the software
    /// nested KVM it exists for, docs/nested-kvm.md), on/off force it.
    #[arg(long, default_value = "auto", value_parser = parse_emulator_fixups)]
    emulator_fixups: vmm::EmulatorFixups,
    /// Add a virtio-rng device fed from the host's getrandom.
    #[arg(long)]
    rng: bool,
    /// A second console (virtio-console): file:PATH receives its output (with --api-sock
    /// too; a snapshot loaded there reopens the file its state names instead).
    #[arg(long, value_parser = parse_console2)]
    console2: Option<PathBuf>,
    #[command(flatten)]
    confine: crate::confinement::ConfineArgs,
    /// A virtio-vsock device: cid=N,uds=PATH (guest CID N >= 3). Host clients connect to
    /// PATH and send "CONNECT <port>\n"; guest connections to host port P go to PATH_P
    /// (Firecracker's protocol, docs/vsock.md). A stale socket at PATH is replaced.
    #[arg(long, value_parser = parse_vsock)]
    vsock: Option<vmm::VsockConfig>,
    /// A shared folder: HOST_DIR:TAG[,readonly=on] (repeatable). The guest mounts it with
    /// `mount -t virtiofs TAG /mnt`; served by virtiofsd, which vessel starts
    /// (docs/shared-folders.md). The tag is what follows the last ':'.
    #[arg(long = "share", value_parser = parse_share, conflicts_with = "jail")]
    shares: Vec<vhost_user::fs::Share>,
    /// A virtio-balloon device: amount_mib=N[,deflate_on_oom=on][,stats_polling_interval_s=S]
    /// [,free_page_reporting=on][,dynamic=on,min_mib=M[,buffer_percent=P][,shrink_delay_s=D]]
    /// (N MiB taken from the guest at boot; dynamic: the target follows the guest's use;
    /// docs/balloon.md).
    #[arg(long, value_parser = crate::balloon_def::parse_balloon)]
    balloon: Option<vmm::BalloonConfig>,
    #[command(flatten)]
    jail: crate::jail_cli::JailArgs,
}

pub(crate) fn parse_disk(s: &str) -> Result<DiskConfig, String> {
    let mut disk = DiskConfig {
        path: PathBuf::new(),
        read_only: false,
        id: None,
        format: None,
        allow_external_backing: false,
        honour_flush: true,
        rate_limit: Default::default(),
    };
    let switch = |key: &str, v: &str| match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("invalid {key} value '{v}' (on or off)")),
    };
    for (i, part) in s.split(',').enumerate() {
        match part.split_once('=') {
            Some(("path", v)) => disk.path = v.into(),
            Some(("readonly" | "ro", v)) => disk.read_only = switch("readonly", v)?,
            Some(("allow-external-backing", v)) => {
                disk.allow_external_backing = switch("allow-external-backing", v)?
            }
            Some(("id", v)) if !v.is_empty() => disk.id = Some(v.to_string()),
            Some(("format", v)) => {
                disk.format = Some(v.parse().map_err(|e: block::Error| e.to_string())?)
            }
            Some(("rate", v)) => {
                let bucket = virtio::rate_limiter::parse_byte_rate(v).map_err(|e| e.to_string())?;
                disk.rate_limit.bandwidth = Some(bucket);
            }
            Some(("iops", v)) => {
                let bucket = virtio::rate_limiter::parse_ops_rate(v).map_err(|e| e.to_string())?;
                disk.rate_limit.ops = Some(bucket);
            }
            None if i == 0 && !part.is_empty() => disk.path = part.into(),
            _ => {
                return Err(format!(
                    "invalid disk option '{part}' (expected path=, readonly=, id=, format=, allow-external-backing=, rate= or iops=)"
                ))
            }
        }
    }
    if disk.path.as_os_str().is_empty() {
        return Err("a disk needs path=IMG".into());
    }
    Ok(disk)
}

fn parse_disk_size(s: &str) -> Result<u64, String> {
    parse_size(s)
}

/// The overlay of `--image`: vessel made it, so its format is known, and it names the
/// store's base image by its absolute path (the store's image was checked at import).
fn overlay_disk(path: &std::path::Path) -> DiskConfig {
    DiskConfig {
        path: path.to_path_buf(),
        read_only: false,
        id: Some("root".into()),
        format: Some(block::Format::Qcow2),
        allow_external_backing: true,
        honour_flush: true,
        rate_limit: Default::default(),
    }
}

fn parse_pit(s: &str) -> Result<vmm::PitMode, String> {
    match s {
        "auto" => Ok(vmm::PitMode::Auto),
        "on" => Ok(vmm::PitMode::On),
        "off" => Ok(vmm::PitMode::Off),
        _ => Err(format!("invalid pit '{s}': expected auto, on or off")),
    }
}

fn parse_emulator_fixups(s: &str) -> Result<vmm::EmulatorFixups, String> {
    s.parse()
        .map_err(|e: vmm::emulator_fixups::ParseError| e.to_string())
}

fn parse_nic(s: &str) -> Result<net::NicConfig, String> {
    net::parse_nic(s).map_err(|e| e.to_string())
}

fn parse_console2(s: &str) -> Result<PathBuf, String> {
    match s.strip_prefix("file:") {
        Some(p) if !p.is_empty() => Ok(p.into()),
        _ => Err(format!("invalid console2 '{s}': expected file:PATH")),
    }
}

pub(crate) fn parse_vsock(s: &str) -> Result<vmm::VsockConfig, String> {
    let (mut cid, mut uds) = (None, None);
    for part in s.split(',') {
        match part.split_once('=') {
            Some(("cid", v)) if cid.is_none() => {
                cid = Some(
                    v.parse::<u64>()
                        .map_err(|_| format!("invalid vsock cid '{v}': expected a number"))?,
                )
            }
            Some(("uds", v)) if uds.is_none() => uds = Some(PathBuf::from(v)),
            _ => {
                return Err(format!(
                    "invalid vsock option '{part}': expected cid=N,uds=PATH, each once"
                ))
            }
        }
    }
    let (Some(cid), Some(uds)) = (cid, uds) else {
        return Err(format!(
            "invalid vsock '{s}': both cid=N and uds=PATH are needed"
        ));
    };
    virtio::vsock::check_config(cid, &uds).map_err(|e| format!("invalid vsock: {e}"))?;
    Ok(vmm::VsockConfig { cid, uds })
}

fn parse_share(s: &str) -> Result<vhost_user::fs::Share, String> {
    vhost_user::fs::Share::parse(s).map_err(|e| e.to_string())
}

pub(crate) fn parse_memory(s: &str) -> Result<u64, String> {
    let bytes = parse_size(s)?;
    arch::memory_map::check_size(bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

fn parse_serial(s: &str) -> Result<SerialMode, String> {
    match s {
        "stdio" => Ok(SerialMode::Stdio),
        "none" => Ok(SerialMode::None),
        _ => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Ok(SerialMode::File(p.into())),
            _ => Err(format!(
                "invalid serial '{s}': expected stdio, file:PATH or none"
            )),
        },
    }
}

/// Errors that come from what the user gave (exit status 2) rather than from the host.
fn is_input_error(e: &VmError) -> bool {
    matches!(
        e,
        VmError::ReadFile { .. }
            | VmError::NotRegularFile { .. }
            | VmError::BootFileTooLarge { .. }
            | VmError::Boot(_)
            | VmError::Memory(_)
            | VmError::TooManyCpus { .. }
            | VmError::SerialFile { .. }
            | VmError::Disk { .. }
            | VmError::DiskSize { .. }
            | VmError::Config(_)
            | VmError::ConsoleFile { .. }
            | VmError::Vsock(_)
            | VmError::Shares(vmm::shares::SharesError::Virtiofsd(_))
            | VmError::Balloon(_)
    )
}

impl RunArgs {
    /// Whether the VM boots a disk image (`--image`), which `vessel` prepares itself.
    pub fn uses_image(&self) -> bool {
        self.image.is_some()
    }
}

/// `vessel-vmm run`: boots one VM in this process (with --api-sock, once the API has
/// configured it; with --incoming, as a migration brings it).
pub fn run(args: RunArgs) -> i32 {
    if args.image.is_some() {
        eprintln!("vessel-vmm: error: --image is prepared by `vessel run`");
        return EXIT_USAGE;
    }
    if let Err(code) = set_confinement(&args) {
        return code;
    }
    if let Some(url) = &args.incoming {
        return crate::migrate_cli::incoming(
            url,
            args.serial,
            args.emulator_fixups,
            args.api_sock.as_deref(),
        );
    }
    if let Some(socket) = args.api_sock {
        return crate::api_mode::run(
            socket,
            args.serial,
            args.emulator_fixups,
            args.console2,
            args.mmds_size_limit,
        );
    }
    if args.disk_size.is_some() {
        eprintln!("vessel: error: --disk-size is only for --image");
        return EXIT_USAGE;
    }
    let mut args = args;
    if !args.cmdline_append.trim().is_empty() {
        args.cmdline = format!("{} {}", args.cmdline, args.cmdline_append.trim());
    }
    run_prepared(args, &[])
}

/// `vessel run --image` (in `vessel`, not `vessel-vmm`): makes the image's run directory,
/// which goes when the VM ends, so the VM runs in this process.
pub fn run_image(mut args: RunArgs) -> i32 {
    if let Err(code) = set_confinement(&args) {
        return code;
    }
    let Some(spec) = args.image.take() else {
        eprintln!("vessel: error: run_image needs --image");
        return EXIT_USAGE;
    };
    let image_run = match crate::image_run::prepare(&spec, args.disk_size, &args.cmdline_append) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("vessel: error: {e:#}");
            return EXIT_USAGE;
        }
    };
    args.kernel = Some(image_run.kernel.clone());
    args.initrd = image_run.initrd.clone();
    args.cmdline = image_run.cmdline.clone();
    args.disks.insert(0, overlay_disk(&image_run.overlay));
    run_prepared(args, &[image_run.dir.as_path()])
}

/// Records the confinement `args` ask for; a bad choice is a usage error.
fn set_confinement(args: &RunArgs) -> Result<(), i32> {
    crate::confinement::set_policy(&args.confine).map_err(|e| {
        eprintln!("vessel: error: {e:#}");
        EXIT_USAGE
    })
}

/// Checks the boot files, builds the VM's configuration and runs it (in a jail when
/// asked); `extra` are directories the confined VMM may still use.
fn run_prepared(args: RunArgs, extra: &[&std::path::Path]) -> i32 {
    let Some(kernel) = args.kernel else {
        eprintln!("vessel: error: --kernel is required");
        return EXIT_USAGE;
    };
    for (what, path) in [("kernel", Some(&kernel)), ("initrd", args.initrd.as_ref())] {
        if let Some(p) = path {
            if !p.is_file() {
                eprintln!(
                    "vessel: error: {what} {} does not exist or is not a file",
                    p.display()
                );
                return EXIT_USAGE;
            }
        }
    }
    let cfg = VmConfig {
        boot: Some(vmm::BootSource {
            kernel,
            initrd: args.initrd,
            cmdline: args.cmdline,
        }),
        machine: vmm::MachineConfig {
            memory: args.memory,
            cpus: args.cpus,
            pit: args.pit,
            disks: args.disks,
            rng: args.rng,
            console2: args.console2,
            nics: args.nics,
            vsock: args.vsock,
            shares: args.shares,
            balloon: args.balloon,
        },
        host: vmm::HostResources {
            serial: args.serial,
            emulator_fixups: args.emulator_fixups,
            ..Default::default()
        },
    };
    if let Err(e) = vhost_user::fs::check_unique(&cfg.machine.shares) {
        eprintln!("vessel: error: {e}");
        return EXIT_USAGE;
    }
    if args.jail.dir.is_some() {
        return crate::jail_cli::run(&args.jail, cfg);
    }
    boot(&cfg, extra)
}

/// Create the VM, confine the process (landlock rules: the VM's files plus `extra` dirs)
/// and run the VM to its end; the exit status.
pub fn boot(cfg: &VmConfig, extra: &[&std::path::Path]) -> i32 {
    let vm = match Vm::new(cfg) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("vessel: error: {}", error_chain(&e));
            return if is_input_error(&e) {
                EXIT_USAGE
            } else {
                EXIT_HOST_ERROR
            };
        }
    };
    if let Err(e) = crate::confinement::lock_down(cfg, extra) {
        eprintln!("vessel: error: {e:#}");
        return EXIT_HOST_ERROR;
    }
    match vm.run() {
        Ok(reason) => report_end(&reason),
        Err(e) => {
            eprintln!("vessel: error: {}", error_chain(&e));
            EXIT_HOST_ERROR
        }
    }
}

/// Say on stderr how the VM ended when it is worth a note; returns the exit status.
pub fn report_end(reason: &ExitReason) -> i32 {
    match reason {
        ExitReason::TripleFault => {
            eprintln!("vessel: the guest triple-faulted (CPU reset); VM ended")
        }
        ExitReason::Fault(report) => {
            eprintln!("vessel: guest fault, VM stopped:\n{}", report.trim_end())
        }
        ExitReason::Stopped => eprintln!("vessel: VM stopped by signal"),
        ExitReason::Migrated => eprintln!("vessel: VM migrated; it runs on the receiver now"),
        _ => {}
    }
    reason.exit_code()
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_modes() {
        assert_eq!(parse_serial("stdio"), Ok(SerialMode::Stdio));
        assert_eq!(
            parse_serial("file:/tmp/x"),
            Ok(SerialMode::File("/tmp/x".into()))
        );
        assert!(parse_serial("file:").is_err());
        assert!(parse_serial("tcp:1").is_err());
    }

    #[test]
    fn disk_rate_limits() {
        use virtio::rate_limiter::bucket_rate_per_second;
        let d = parse_disk("/a.img,rate=10M,iops=500").unwrap();
        let bandwidth = d.rate_limit.bandwidth.unwrap();
        assert_eq!(bucket_rate_per_second(&bandwidth), 10 << 20);
        assert_eq!(bucket_rate_per_second(&d.rate_limit.ops.unwrap()), 500);
        assert!(!parse_disk("/a.img").unwrap().rate_limit.limits());
        let e = parse_disk("/a.img,rate=10MB").unwrap_err();
        assert!(e.contains("invalid rate \"10MB\""), "{e}");
        assert!(parse_disk("/a.img,iops=0").is_err());
    }

    #[test]
    fn disk_options() {
        let d = parse_disk("path=/a.img,readonly=on,id=root,format=qcow2").unwrap();
        assert_eq!(d.path, PathBuf::from("/a.img"));
        assert!(d.read_only);
        assert_eq!(d.id.as_deref(), Some("root"));
        assert_eq!(d.format, Some(block::Format::Qcow2));
        assert_eq!(parse_disk("/b.raw").unwrap().path, PathBuf::from("/b.raw"));
        assert!(parse_disk("readonly=on").is_err());
        assert!(parse_disk("path=/a,readonly=maybe").is_err());
        assert!(parse_disk("path=/a,format=floppy").is_err());
        assert!(!parse_disk("/a").unwrap().allow_external_backing);
        assert!(
            parse_disk("/a,allow-external-backing=on")
                .unwrap()
                .allow_external_backing
        );
        let err = parse_disk("/a,allow-external-backing=maybe").unwrap_err();
        assert!(err.contains("allow-external-backing"), "{err}");
        assert!(parse_disk("path=/a,bogus=1").is_err());
    }

    #[test]
    fn vsock_options() {
        let v = parse_vsock("cid=3,uds=/tmp/v.sock").unwrap();
        assert_eq!((v.cid, v.uds), (3, PathBuf::from("/tmp/v.sock")));
        assert_eq!(
            parse_vsock("uds=/v,cid=4294967294").unwrap().cid,
            4294967294
        );
        for bad in [
            "cid=2,uds=/v",
            "cid=4294967295,uds=/v",
            "cid=x,uds=/v",
            "cid=3",
            "uds=/v",
            "cid=3,uds=",
            "cid=3,uds=/v,cid=4",
            "cid=3,uds=/v,port=1",
        ] {
            assert!(parse_vsock(bad).is_err(), "{bad}");
        }
        let long = format!("cid=3,uds=/{}", "x".repeat(96));
        assert!(parse_vsock(&long).unwrap_err().contains("at most 96"));
    }

    #[test]
    fn memory_sizes() {
        assert!(parse_memory("512").unwrap_err().contains("give a unit"));
        assert_eq!(parse_memory("512M"), Ok(512 << 20));
        assert_eq!(parse_memory("1G"), Ok(1 << 30));
        assert!(parse_memory("1K").is_err());
        assert!(parse_memory("4097K").is_err());
    }
}
