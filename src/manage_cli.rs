//! Managing VMs that run in the background: `vessel create/start/stop/ls/inspect/console/
//! ssh/rm/validate`, and the hidden `vessel vmm NAME` that `start` runs detached.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};

use crate::state::{self, StateDir, VmDir, VmState};
use crate::vmdef::VmDefinition;

/// What `vessel export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Vessel,
    Ova,
}

#[derive(Debug, Subcommand)]
pub enum ManageCommand {
    /// Define a new VM, from a definition file or from flags.
    Create(crate::vm_create::CreateArgs),
    /// Create the VM from ./vessel.toml (or --from FILE) if it does not exist, start it and
    /// wait for its sshd (Vagrant's `up`).
    Up(crate::project_cli::UpArgs),
    /// Stop a VM, apply what changed in its project file, start it again (Vagrant's `reload`).
    Reload(crate::project_cli::ReloadArgs),
    /// Run a running VM's [[provision]] entries over SSH (all, or --only one).
    Provision(crate::provision_cli::ProvisionArgs),
    /// Print an Ansible inventory of the running VMs that answer on SSH (JSON, or --ini).
    Inventory(crate::inventory_cli::InventoryArgs),
    /// Change a stopped VM: CPUs, memory, NICs, forwards, disks... (create's flags); on a
    /// running VM, add or remove nat port forwards live.
    Set(crate::vm_set::SetArgs),
    /// Start a VM in the background; returns once the guest is running (and, on its first
    /// start, once its [[provision]] entries ran over SSH).
    Start {
        /// The VM to start.
        name: String,
        /// Do not run the provisioners that never ran.
        #[arg(long)]
        no_provision: bool,
        /// Print the VM's summary as JSON (the fields of `vessel ls --json`).
        #[arg(long)]
        json: bool,
        /// Do not boot the VM: wait for a live migration of it from another vessel
        /// (`vessel migrate NAME --to URL` there) on unix:PATH or tcp:HOST:PORT, and run it
        /// here from then on. Returns once listening; `ls` shows `incoming` until it
        /// arrives. Its disks are the definition's (shared storage).
        #[arg(long, value_name = "URL", conflicts_with = "no_provision")]
        incoming: Option<String>,
        /// With --incoming: the sender streams its disks (`vessel migrate --copy-storage`)
        /// and they are written into the images this VM's definition names, which must
        /// exist with the arriving disks' sizes; their contents are replaced.
        #[arg(long, requires = "incoming")]
        copy_storage: bool,
    },
    /// Save a running VM's whole state in its directory and end its VMM (Vagrant's
    /// suspend); `resume` or `start` continues it where it was.
    Suspend {
        /// The running VM.
        name: String,
        /// Print the VM's summary as JSON afterwards (the fields of `vessel ls --json`).
        #[arg(long)]
        json: bool,
    },
    /// Continue a suspended VM from its saved state (its memory mapped lazily).
    Resume {
        /// The suspended VM.
        name: String,
        /// Print the VM's summary as JSON afterwards (the fields of `vessel ls --json`).
        #[arg(long)]
        json: bool,
    },
    /// Stop a VM: Ctrl-Alt-Del to the guest first, then power it off after the timeout.
    /// A suspended VM's saved state is discarded (it becomes stopped).
    Stop {
        /// The VM to stop.
        name: String,
        /// Do not ask the guest; power the VM off at once.
        #[arg(long)]
        force: bool,
        /// Seconds to wait for the guest to shut down before powering it off.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Print the VM's summary as JSON once it stopped (the fields of `vessel ls --json`).
        #[arg(long)]
        json: bool,
    },
    /// List VMs (a VM whose definition does not load is listed as broken).
    Ls {
        /// Print a JSON array of VM summaries (fields in docs/vm-definition.md).
        #[arg(long)]
        json: bool,
    },
    /// Show everything about one VM.
    Inspect {
        /// The VM to show.
        name: String,
        /// Print JSON (the `ls --json` fields, paths, definition, snapshots).
        #[arg(long)]
        json: bool,
    },
    /// Show or set a running VM's memory through its balloon ([balloon] in its definition).
    Memory(crate::memory_cli::MemoryArgs),
    /// Live-migrate a running VM to a receiver (`vessel run --incoming URL`), progress on
    /// stderr (docs/migration.md).
    Migrate(crate::migrate_cli::MigrateArgs),
    /// Attach to a running VM's serial console (Ctrl-] detaches).
    Console {
        /// The running VM whose console to attach to.
        name: String,
    },
    /// SSH into a VM through its forwarded SSH port.
    Ssh(crate::ssh_cli::SshArgs),
    /// Print an OpenSSH config block (or JSON) to reach a running VM as `vessel ssh` does.
    SshConfig(crate::ssh_cli::SshConfigArgs),
    /// Copy files between the host and a VM (NAME:PATH) over SSH (scp -r).
    Cp(crate::ssh_cli::CpArgs),
    /// Delete a stopped VM (and the disks vessel created for it, unless --keep-disks).
    Rm {
        /// The stopped VM to delete.
        name: String,
        /// Keep the disks vessel created in the VM's directory (and the images they read).
        #[arg(long)]
        keep_disks: bool,
    },
    /// A second running VM from a running one, at the same instant (memory and linked disk
    /// overlays); the source pauses meanwhile. nat NICs only (docs/vms.md).
    Fork {
        /// The running VM.
        src: String,
        /// Name of the fork.
        dst: String,
        /// Print the fork's summary as JSON (the fields of `vessel ls --json`).
        #[arg(long)]
        json: bool,
    },
    /// Copy a stopped VM; --linked makes its disks qcow2 overlays of the source's.
    Clone {
        /// The stopped VM to copy.
        src: String,
        /// Name of the copy.
        dst: String,
        /// Make the copy's disks qcow2 overlays of the source's instead of full copies.
        #[arg(long)]
        linked: bool,
        /// Print the copy's summary as JSON (the fields of `vessel ls --json`).
        #[arg(long)]
        json: bool,
    },
    /// Write a stopped VM (definition, boot files, disks) into one archive.
    Export {
        /// The stopped VM to export.
        name: String,
        /// The archive to write.
        file: PathBuf,
        /// vessel (vessel's own archive) or ova (OVF 1.0 appliance with streamOptimized
        /// VMDKs and a SHA256 manifest, as VirtualBox writes it).
        #[arg(long, value_enum, default_value_t = ExportFormat::Vessel)]
        format: ExportFormat,
    },
    /// Create a VM from an archive made by `vessel export`.
    Import {
        /// The archive to read: vessel's own, or an OVA appliance (.ova, OVF 1.x/2.x).
        file: PathBuf,
        /// Name of the new VM (default: the name in the archive).
        #[arg(long)]
        name: Option<String>,
        /// OVA only: the host interface for the appliance's bridged NICs (without it they
        /// become nat, as the import reports).
        #[arg(long)]
        bridge: Option<String>,
    },
    /// Check a VM definition file (fields, and that its files exist); errors name the line.
    Validate {
        /// The definition file (TOML, docs/vm-definition.md).
        file: PathBuf,
    },
    /// Run a defined VM in this process (what `start` runs in the background, through
    /// `vessel-vmm`).
    #[command(hide = true)]
    Vmm(VmmArgs),
}

/// The arguments of `vmm`: which defined VM to run, and how it starts.
#[derive(Debug, Args)]
pub struct VmmArgs {
    /// The VM to run.
    pub name: String,
    /// Wait for the VM on this migration URL instead of booting it.
    #[arg(long)]
    pub incoming: Option<String>,
    /// With --incoming: write the disks the sender streams into the definition's.
    #[arg(long, requires = "incoming")]
    pub copy_storage: bool,
}

/// `vmm NAME`: runs the defined VM in this process (in `vessel-vmm`).
pub fn run_defined(state_dir: Option<PathBuf>, args: VmmArgs) -> Result<i32> {
    let state = StateDir::new(state_dir)?;
    let incoming = args.incoming.map(|url| crate::incoming_cli::Incoming {
        url,
        copy_storage: args.copy_storage,
    });
    vmm_process(&state, &args.name, incoming.as_ref())
}

pub fn run(state_dir: Option<PathBuf>, cmd: ManageCommand) -> Result<i32> {
    if let ManageCommand::Validate { file } = &cmd {
        return validate(file);
    }
    let state = StateDir::new(state_dir)?;
    match cmd {
        ManageCommand::Create(args) => crate::vm_create::create(&state, args),
        ManageCommand::Set(args) => crate::vm_set::set(&state, args),
        ManageCommand::Provision(args) => crate::provision_cli::provision(&state, args),
        ManageCommand::Inventory(args) => crate::inventory_cli::inventory(&state, args),
        ManageCommand::Up(args) => crate::project_cli::up(&state, args),
        ManageCommand::Reload(args) => crate::project_cli::reload(&state, args),
        ManageCommand::Start {
            name,
            json,
            incoming: Some(url),
            copy_storage,
            ..
        } => {
            let incoming = crate::incoming_cli::Incoming { url, copy_storage };
            crate::incoming_cli::start(&state, &name, &incoming, json)?;
            summary_if(json, &state, &name)
        }
        ManageCommand::Start {
            name,
            no_provision,
            json,
            incoming: None,
            ..
        } => {
            start(&state, &name, json)?;
            if !no_provision {
                let code = crate::provision_cli::run_pending(&state, &name, 300)?;
                if code != 0 {
                    return Ok(code);
                }
            }
            summary_if(json, &state, &name)
        }
        ManageCommand::Suspend { name, json } => {
            crate::suspend_cli::suspend(&state, &name, json)?;
            summary_if(json, &state, &name)
        }
        ManageCommand::Resume { name, json } => {
            crate::suspend_cli::resume(&state, &name, json)?;
            summary_if(json, &state, &name)
        }
        ManageCommand::Stop {
            name,
            force,
            timeout,
            json,
        } => {
            stop(&state, &name, force, timeout, json)?;
            summary_if(json, &state, &name)
        }
        ManageCommand::Ls { json } => crate::vm_list::ls(&state, json),
        ManageCommand::Inspect { name, json } => crate::vm_list::inspect(&state, &name, json),
        ManageCommand::Console { name } => console(&state, &name),
        ManageCommand::Memory(args) => crate::memory_cli::memory(&state, args),
        ManageCommand::Migrate(args) => crate::migrate_cli::migrate(&state, args),
        ManageCommand::Ssh(args) => crate::ssh_cli::ssh(&state, args),
        ManageCommand::Cp(args) => crate::ssh_cli::cp(&state, args),
        ManageCommand::SshConfig(args) => crate::ssh_cli::ssh_config(&state, args),
        ManageCommand::Rm { name, keep_disks } => rm(&state, &name, keep_disks),
        ManageCommand::Vmm(_) => Err(crate::exit::usage(
            "vmm is run by vessel-vmm (vessel starts it)".to_string(),
        )),
        ManageCommand::Fork { src, dst, json } => {
            crate::fork_cli::fork(&state, &src, &dst, json)?;
            crate::project_cli::register_state_dir(&state)?;
            summary_if(json, &state, &dst)
        }
        ManageCommand::Clone {
            src,
            dst,
            linked,
            json,
        } => {
            crate::vm_archive::clone(&state, &src, &dst, linked, json)?;
            crate::project_cli::register_state_dir(&state)?;
            summary_if(json, &state, &dst)
        }
        ManageCommand::Export { name, file, format } => match format {
            ExportFormat::Vessel => crate::vm_archive::export(&state, &name, &file),
            ExportFormat::Ova => crate::ova::export(&state, &name, &file),
        },
        ManageCommand::Import { file, name, bridge } => {
            let code = if crate::ova::looks_like_ova(&file) {
                crate::ova::import(&state, &file, name.as_deref(), bridge.as_deref())?
            } else if bridge.is_some() {
                return Err(crate::exit::usage(
                    "--bridge applies to OVA appliances only".to_string(),
                ));
            } else {
                crate::vm_archive::import(&state, &file, name.as_deref())?
            };
            crate::project_cli::register_state_dir(&state)?;
            Ok(code)
        }
        ManageCommand::Validate { .. } => unreachable!("handled above"),
    }
}

/// With `--json`, the VM's summary after a command (which then printed nothing else).
fn summary_if(json: bool, state: &StateDir, name: &str) -> Result<i32> {
    if json {
        crate::vm_list::print_summary(&state.vm(name)?)?;
    }
    Ok(0)
}

fn validate(file: &PathBuf) -> Result<i32> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = crate::image_vm::fill_boot(&text)?.unwrap_or(text);
    let checked = VmDefinition::parse(file, &text).and_then(|mut def| {
        if let Ok(dir) = crate::vm_create::file_dir(file) {
            def.resolve_paths(&dir);
        }
        def.check_files(file, &text)
    });
    match checked {
        Ok(()) => {
            println!("{}: ok", file.display());
            Ok(0)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(2)
        }
    }
}

pub(crate) fn start(state: &StateDir, name: &str, json: bool) -> Result<i32> {
    let verb = if crate::suspend_cli::saved_state(&state.vm(name)?).is_some() {
        "resumed"
    } else {
        "started"
    };
    let pid = spawn_vmm(state, name, None)?;
    if !json {
        println!("{verb} VM '{name}' (pid {pid})");
    }
    Ok(0)
}

/// Starts the VM's VMM process (`vessel vmm NAME`, detached; `--incoming URL` passed on)
/// and waits until it reports it runs the VM (or listens for it); its pid.
pub(crate) fn spawn_vmm(
    state: &StateDir,
    name: &str,
    incoming: Option<&crate::incoming_cli::Incoming>,
) -> Result<u32> {
    let vm = state.vm(name)?;
    let def = vm.definition()?;
    if vm.try_lock()?.is_none() {
        return Err(crate::exit::usage(format!(
            "VM '{name}' is already running (pid {})",
            vm.pid().unwrap_or(0)
        )));
    }
    // Disks added to vm.toml by hand since creation get their format recorded now, before
    // any guest ran on them.
    for (path, format) in crate::disk_formats::record(&vm.path(state::DEFINITION))? {
        eprintln!(
            "vessel: recorded format {format} for disk {} in vm.toml",
            path.display()
        );
    }
    crate::vm_ports::choose(state, &vm, &def)?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors into a valid array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: the descriptors were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let log = std::fs::File::create(vm.path(state::VMM_LOG))?;
    let exe = crate::vmm_exe::path()?;
    let ready_fd = write_end.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg("--state-dir").arg(&state.root);
    cmd.arg("--log-level").arg(crate::logging::level().as_arg());
    cmd.arg("vmm").arg(name);
    if let Some(incoming) = incoming {
        cmd.arg("--incoming").arg(&incoming.url);
        if incoming.copy_storage {
            cmd.arg("--copy-storage");
        }
    }
    cmd.env("VESSEL_READY_FD", ready_fd.to_string());
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: only async-signal-safe calls (setsid, close_range, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            // A daemon keeps none of its caller's descriptors: a caller that waits for its
            // pipes to close (Vagrant, CI runners) would wait for the VM's whole life.
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            let flags = libc::fcntl(ready_fd, libc::F_GETFD);
            libc::fcntl(ready_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let child = cmd.spawn().context("cannot start the VMM process")?;
    drop(write_end);
    let mut status = String::new();
    std::fs::File::from(read_end).read_to_string(&mut status)?;
    if status.trim() == "ready" {
        Ok(child.id())
    } else {
        let msg = if status.trim().is_empty() {
            std::fs::read_to_string(vm.path(state::VMM_LOG)).unwrap_or_default()
        } else {
            status
        };
        bail!("VM '{name}' did not start: {}", msg.trim())
    }
}

/// Report readiness (or failure) to `vessel start` through the inherited pipe.
pub(crate) fn report(ready: &mut Option<std::fs::File>, msg: &str) {
    if let Some(f) = ready.as_mut() {
        let _ = writeln!(f, "{msg}");
    }
    *ready = None;
}

/// The VM booted from its definition, or rebuilt from the state `vessel suspend` saved.
fn build(vm: &VmDir, cfg: vmm::VmConfig) -> Result<(vmm::Vm, vmm::VmConfig)> {
    match crate::suspend_cli::saved_state(vm) {
        Some(saved) => crate::suspend_cli::restore(vm, &saved, cfg),
        None => Ok((
            vmm::Vm::new(&cfg).map_err(|e| anyhow!("{}", crate::run_cli::error_chain(&e)))?,
            cfg,
        )),
    }
}

fn vmm_process(
    state: &StateDir,
    name: &str,
    incoming: Option<&crate::incoming_cli::Incoming>,
) -> Result<i32> {
    let mut ready = std::env::var("VESSEL_READY_FD")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .map(|fd| {
            // Not inherited by what the VMM spawns (passt, helpers): `vessel start` waits
            // for every copy of the write end to close.
            // SAFETY: fcntl on a descriptor number; a bad one fails with EBADF.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            // SAFETY: `vessel start` passed this descriptor for us alone.
            unsafe { std::fs::File::from_raw_fd(fd) }
        });
    let vm = state.vm(name)?;
    crate::confinement::set_policy(&crate::confinement::ConfineArgs::default_on())?;
    let result = (|| -> Result<_> {
        let mut def = vm.definition()?;
        crate::vm_ports::resolve(&vm, &mut def)?;
        let lock = vm
            .try_lock()?
            .ok_or_else(|| anyhow!("VM '{name}' is already running"))?;
        let serial = vmm::SerialMode::Background {
            log: vm.path(state::SERIAL_LOG),
            socket: vm.path(state::CONSOLE_SOCKET),
        };
        let cfg = def.vm_config(serial)?;
        let (machine, cfg, arriving) = match incoming {
            // Blocks the control signals itself once the VM is in.
            Some(incoming) => crate::incoming_cli::receive(&vm, incoming, cfg, &mut ready)?,
            None => {
                // Before any thread starts (the API server's): the VM's event loop reads
                // these signals.
                crate::api_mode::block_control_signals();
                let (machine, cfg) = build(&vm, cfg)?;
                (machine, cfg, None)
            }
        };
        let api_server =
            crate::api_mode::serve_running(&vm.path(state::API_SOCKET), &cfg, machine.handle())
                .map_err(|e| {
                    anyhow!("cannot serve the API: {}", crate::run_cli::error_chain(&e))
                })?;
        Ok((lock, machine, api_server, cfg, arriving))
    })();
    let (_lock, mut machine, api_server, cfg, arriving) = match result {
        Ok(x) => x,
        Err(e) => {
            report(&mut ready, &format!("{e:#}"));
            if incoming.is_some() {
                crate::incoming_cli::failed(&vm, &e);
            }
            return Err(e);
        }
    };
    let _ = std::fs::remove_file(vm.path(state::EXIT_FILE));
    std::fs::write(
        vm.path(state::PID_FILE),
        format!("{}\n", std::process::id()),
    )?;
    crate::confinement::lock_down(&cfg, &[vm.dir.as_path()])?;
    match arriving {
        Some(stream) => {
            if let Err(e) = crate::incoming_cli::hand_over(&vm, stream, &mut machine) {
                crate::incoming_cli::failed(&vm, &e);
                return Err(e);
            }
        }
        None => report(&mut ready, "ready"),
    }
    let outcome = machine.run();
    let _ = api_server.shutdown();
    let note = match &outcome {
        Ok(vmm::ExitReason::PowerOff) => "guest powered off".to_string(),
        Ok(vmm::ExitReason::Reset) => "guest reset".to_string(),
        Ok(vmm::ExitReason::TripleFault) => "guest triple-faulted".to_string(),
        Ok(vmm::ExitReason::Stopped) => "stopped by the host".to_string(),
        Ok(vmm::ExitReason::Migrated) => "migrated to another VMM".to_string(),
        Ok(vmm::ExitReason::DebugExit(c)) => format!("guest exited with debug-exit code {c}"),
        Ok(vmm::ExitReason::Fault(report)) => format!("guest fault:\n{report}"),
        Err(e) => format!("VMM error: {}", crate::run_cli::error_chain(e)),
    };
    std::fs::write(vm.path(state::EXIT_FILE), format!("{note}\n"))?;
    let _ = std::fs::remove_file(vm.path(state::CONSOLE_SOCKET));
    eprintln!("vessel: VM '{name}' ended: {note}");
    Ok(match outcome {
        Ok(r) => r.exit_code(),
        Err(_) => crate::run_cli::EXIT_HOST_ERROR,
    })
}

pub(crate) fn signal(vm: &VmDir, sig: i32) -> Result<bool> {
    match vm.state()? {
        VmState::Running { pid } | VmState::Incoming { pid } if pid > 0 => {
            // SAFETY: sending a signal to the VMM process that holds this VM's lock.
            Ok(unsafe { libc::kill(pid, sig) } == 0)
        }
        _ => Ok(false),
    }
}

pub(crate) fn stop(
    state: &StateDir,
    name: &str,
    force: bool,
    timeout: u64,
    json: bool,
) -> Result<i32> {
    // With --json the summary that follows says it all.
    let say = |msg: String| {
        if !json {
            println!("{msg}");
        }
    };
    let vm = state.vm(name)?;
    vm.definition()?;
    match vm.state()? {
        VmState::Running { .. } => {}
        VmState::Incoming { .. } => {
            crate::incoming_cli::stop_waiting(&vm)?;
            say(format!("VM '{name}' no longer waits for a migration"));
            return Ok(0);
        }
        VmState::Suspended => {
            crate::suspend_cli::discard(&vm)?;
            std::fs::write(vm.path(state::EXIT_FILE), "saved state discarded\n")?;
            say(format!(
                "VM '{name}' was suspended: its saved state is discarded"
            ));
            return Ok(0);
        }
        _ => {
            say(format!("VM '{name}' is not running"));
            return Ok(0);
        }
    }
    if !force
        && signal(&vm, libc::SIGUSR1)?
        && state::wait_for_exit(&vm, Duration::from_secs(timeout))?
    {
        say(format!(
            "VM '{name}' shut down ({})",
            vm.exit_note().unwrap_or_default()
        ));
        return Ok(0);
    }
    if signal(&vm, libc::SIGTERM)? && state::wait_for_exit(&vm, Duration::from_secs(5))? {
        say(format!("VM '{name}' powered off"));
        return Ok(0);
    }
    signal(&vm, libc::SIGKILL)?;
    state::wait_for_exit(&vm, Duration::from_secs(5))?;
    std::fs::write(vm.path(state::EXIT_FILE), "killed by vessel stop\n")?;
    say(format!("VM '{name}' killed"));
    Ok(0)
}

fn console(state: &StateDir, name: &str) -> Result<i32> {
    let vm = state.vm(name)?;
    vm.definition()?;
    if !matches!(vm.state()?, VmState::Running { .. }) {
        return Err(crate::exit::usage(format!("VM '{name}' is not running")));
    }
    let mut sock = std::os::unix::net::UnixStream::connect(vm.path(state::CONSOLE_SOCKET))
        .with_context(|| format!("cannot attach to the console of '{name}'"))?;
    eprintln!("attached to '{name}' (Ctrl-] detaches)\r");
    let mut out = sock.try_clone()?;
    let printer = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdout = std::io::stdout();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0
                || stdout
                    .write_all(&buf[..n])
                    .and_then(|_| stdout.flush())
                    .is_err()
            {
                break;
            }
        }
    });
    let _raw = vmm::console::RawTerminal::stdin();
    let mut buf = [0u8; 1024];
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    loop {
        let n = stdin.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(pos) = buf[..n].iter().position(|&b| b == 0x1d) {
            sock.write_all(&buf[..pos])?;
            break;
        }
        sock.write_all(&buf[..n])?;
    }
    let _ = sock.shutdown(std::net::Shutdown::Both);
    let _ = printer.join();
    eprintln!("\r\ndetached from '{name}'");
    Ok(0)
}

fn rm(state: &StateDir, name: &str, keep_disks: bool) -> Result<i32> {
    let vm = state.vm(name)?;
    let def = vm.definition()?;
    if vm.state()?.vmm_pid().is_some() {
        return Err(crate::exit::usage(format!(
            "VM '{name}' is running; stop it first"
        )));
    }
    let mut own_disks: Vec<PathBuf> = def
        .disks
        .iter()
        .map(|d| d.path.get_ref().clone())
        .filter(|p| p.starts_with(&vm.dir))
        .collect();
    if keep_disks {
        // Snapshot overlays need the images under them.
        own_disks.extend(crate::snapshot_cli::chain_files_in_dir(&vm, &def));
    }
    for entry in std::fs::read_dir(&vm.dir)? {
        let path = entry?.path();
        if keep_disks && own_disks.contains(&path) {
            continue;
        }
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    if keep_disks && !own_disks.is_empty() {
        println!(
            "removed VM '{name}'; kept its disks in {}",
            vm.dir.display()
        );
    } else {
        std::fs::remove_dir(&vm.dir)?;
        println!("removed VM '{name}'");
    }
    Ok(0)
}
