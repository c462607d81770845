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

#[derive(Debug, Subcommand)]
pub enum ManageCommand {
    /// Define a new VM, from a definition file or from flags.
    Create(CreateArgs),
    /// Start a VM in the background; returns once the guest is running.
    Start { name: String },
    /// Stop a VM: Ctrl-Alt-Del to the guest first, then power it off after the timeout.
    Stop {
        name: String,
        /// Do not ask the guest; power the VM off at once.
        #[arg(long)]
        force: bool,
        /// Seconds to wait for the guest to shut down before powering it off.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// List VMs.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show everything about one VM (JSON).
    Inspect { name: String },
    /// Attach to a running VM's serial console (Ctrl-] detaches).
    Console { name: String },
    /// SSH into a VM through its forwarded SSH port.
    Ssh(crate::ssh_cli::SshArgs),
    /// Copy files between the host and a VM (NAME:PATH) over SSH (scp -r).
    Cp(crate::ssh_cli::CpArgs),
    /// Delete a stopped VM (and the disks vessel created for it, unless --keep-disks).
    Rm {
        name: String,
        #[arg(long)]
        keep_disks: bool,
    },
    /// Copy a stopped VM; --linked makes its disks qcow2 overlays of the source's.
    Clone {
        src: String,
        dst: String,
        #[arg(long)]
        linked: bool,
    },
    /// Write a stopped VM (definition, boot files, disks) into one archive.
    Export { name: String, file: PathBuf },
    /// Create a VM from an archive made by `vessel export`.
    Import {
        file: PathBuf,
        #[arg(long)]
        name: Option<String>,
    },
    /// Check a VM definition file; errors name the line.
    Validate { file: PathBuf },
    /// Run a defined VM in this process (what `start` runs in the background).
    #[command(hide = true)]
    Vmm { name: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    name: String,
    /// A VM definition file (TOML); relative paths in it are relative to the file.
    #[arg(long, conflicts_with_all = ["kernel"])]
    from: Option<PathBuf>,
    #[arg(long)]
    kernel: Option<PathBuf>,
    #[arg(long)]
    initrd: Option<PathBuf>,
    #[arg(long)]
    cmdline: Option<String>,
    #[arg(long, default_value = "512M")]
    memory: String,
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// Create a dynamically allocated qcow2 disk of this size for the VM (with --image: the
    /// size of the overlay, at least the image's).
    #[arg(long)]
    disk_size: Option<String>,
    /// Boot this image of the store (`vessel image ls`): its kernel, an overlay of it as the
    /// first disk, a cloud-init seed with your ssh key, and a NAT NIC with SSH forwarded.
    #[arg(long, conflicts_with_all = ["kernel", "initrd", "cmdline", "from"])]
    image: Option<String>,
    /// With --image: more cloud-init user-data (#cloud-config, a script, MIME).
    #[arg(long)]
    user_data: Option<PathBuf>,
    /// Words added at the end of the kernel command line.
    #[arg(long, default_value = "")]
    cmdline_append: String,
}

pub fn run(state_dir: Option<PathBuf>, cmd: ManageCommand) -> Result<i32> {
    if let ManageCommand::Validate { file } = &cmd {
        return validate(file);
    }
    let state = StateDir::new(state_dir)?;
    match cmd {
        ManageCommand::Create(args) => create(&state, args),
        ManageCommand::Start { name } => start(&state, &name),
        ManageCommand::Stop {
            name,
            force,
            timeout,
        } => stop(&state, &name, force, timeout),
        ManageCommand::Ls { json } => ls(&state, json),
        ManageCommand::Inspect { name } => inspect(&state, &name),
        ManageCommand::Console { name } => console(&state, &name),
        ManageCommand::Ssh(args) => crate::ssh_cli::ssh(&state, args),
        ManageCommand::Cp(args) => crate::ssh_cli::cp(&state, args),
        ManageCommand::Rm { name, keep_disks } => rm(&state, &name, keep_disks),
        ManageCommand::Vmm { name } => vmm_process(&state, &name),
        ManageCommand::Clone { src, dst, linked } => {
            crate::vm_archive::clone(&state, &src, &dst, linked)
        }
        ManageCommand::Export { name, file } => crate::vm_archive::export(&state, &name, &file),
        ManageCommand::Import { file, name } => {
            crate::vm_archive::import(&state, &file, name.as_deref())
        }
        ManageCommand::Validate { .. } => unreachable!("handled above"),
    }
}

fn validate(file: &PathBuf) -> Result<i32> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = crate::image_vm::fill_boot(&text)?.unwrap_or(text);
    match VmDefinition::parse(file, &text) {
        Ok(_) => {
            println!("{}: ok", file.display());
            Ok(0)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(2)
        }
    }
}

fn create(state: &StateDir, args: CreateArgs) -> Result<i32> {
    let vm = state.vm(&args.name)?;
    if vm.exists() {
        bail!("a VM named '{}' already exists", args.name);
    }
    if args.user_data.is_some() && args.image.is_none() {
        bail!("--user-data is only for --image");
    }
    let text = definition_text(&vm, &args)?;
    let text = crate::image_vm::fill_boot(&text)?.unwrap_or(text);
    // Check what we are about to store, then make its files; nothing is left of a VM
    // whose creation failed.
    let mut def = VmDefinition::parse(&vm.path(state::DEFINITION), &text)?;
    let made = (|| -> Result<()> {
        let disk_size = match &args.disk_size {
            Some(s) if def.image.is_some() => {
                Some(crate::size::parse_size(s, 1).map_err(|e| anyhow!(e))?)
            }
            _ => None,
        };
        let append = args.cmdline_append.trim();
        if !append.is_empty() {
            def.boot.cmdline = format!("{} {append}", def.boot.cmdline);
        }
        crate::image_vm::provision(state, &vm, &mut def, disk_size)?;
        state::ensure_dir(&vm.dir)?;
        create_sized_disks(&def)?;
        std::fs::write(vm.path(state::DEFINITION), toml::to_string_pretty(&def)?)?;
        // Detected once, here: later starts never probe what the guest may have written.
        crate::disk_formats::record(&vm.path(state::DEFINITION))?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&vm.dir);
        return Err(e);
    }
    println!("created VM '{}' in {}", args.name, vm.dir.display());
    Ok(0)
}

/// The definition `create` starts from: the file of --from (paths made absolute), or one
/// written from the flags.
fn definition_text(vm: &VmDir, args: &CreateArgs) -> Result<String> {
    if let Some(file) = &args.from {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let text = crate::image_vm::fill_boot(&text)?.unwrap_or(text);
        let mut def = VmDefinition::parse(file, &text)?;
        let base = file.parent().map(|p| p.to_path_buf()).unwrap_or_default();
        def.resolve_paths(&std::fs::canonicalize(if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        })?);
        def.name = toml::Spanned::new(0..0, args.name.clone());
        return Ok(toml::to_string_pretty(&def)?);
    }
    let mut t = format!(
        "name = {:?}\ncpus = {}\nmemory = {:?}\n",
        args.name, args.cpus, args.memory
    );
    if let Some(image) = &args.image {
        t += &format!("image = {image:?}\n");
        if let Some(u) = &args.user_data {
            let u =
                std::fs::canonicalize(u).with_context(|| format!("user data {}", u.display()))?;
            t += &format!("user_data = {u:?}\n");
        }
        return Ok(t);
    }
    let kernel = args
        .kernel
        .as_ref()
        .ok_or_else(|| anyhow!("give --from FILE, --image NAME or --kernel PATH"))?;
    let kernel =
        std::fs::canonicalize(kernel).with_context(|| format!("kernel {}", kernel.display()))?;
    t += &format!("\n[boot]\nkernel = {kernel:?}\n");
    if let Some(i) = &args.initrd {
        let i = std::fs::canonicalize(i).with_context(|| format!("initrd {}", i.display()))?;
        t += &format!("initrd = {i:?}\n");
    }
    if let Some(c) = &args.cmdline {
        t += &format!("cmdline = {c:?}\n");
    }
    if let Some(size) = &args.disk_size {
        t += &format!(
            "\n[[disk]]\npath = {:?}\nformat = \"qcow2\"\nsize = {size:?}\n",
            vm.path("disk.qcow2")
        );
    }
    Ok(t)
}

/// Create the disks of `def` that have a size and do not exist yet (sparse).
fn create_sized_disks(def: &VmDefinition) -> Result<()> {
    for d in &def.disks {
        let path = d.path.get_ref();
        if let (Some(size), false) = (&d.size, path.exists()) {
            let bytes = crate::size::parse_size(size.get_ref(), 1).map_err(|e| anyhow!(e))?;
            let format = match &d.format {
                Some(f) => f
                    .get_ref()
                    .parse()
                    .map_err(|e: block::Error| anyhow!("{e}"))?,
                None => block::Format::Qcow2,
            };
            block::create(path, format, bytes, &block::CreateOptions::default())
                .with_context(|| format!("creating disk {}", path.display()))?;
        }
    }
    Ok(())
}

fn start(state: &StateDir, name: &str) -> Result<i32> {
    let vm = state.vm(name)?;
    vm.definition()?;
    if vm.try_lock()?.is_none() {
        bail!(
            "VM '{name}' is already running (pid {})",
            vm.pid().unwrap_or(0)
        );
    }
    // Disks added to vm.toml by hand since creation get their format recorded now, before
    // any guest ran on them.
    for (path, format) in crate::disk_formats::record(&vm.path(state::DEFINITION))? {
        eprintln!(
            "vessel: recorded format {format} for disk {} in vm.toml",
            path.display()
        );
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors into a valid array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: the descriptors were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let log = std::fs::File::create(vm.path(state::VMM_LOG))?;
    let exe = std::env::current_exe()?;
    let ready_fd = write_end.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg("--state-dir").arg(&state.root);
    cmd.arg("--log-level").arg(crate::logging::level().as_arg());
    cmd.arg("vmm").arg(name);
    cmd.env("VESSEL_READY_FD", ready_fd.to_string());
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: only async-signal-safe calls (setsid, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
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
        println!("started VM '{name}' (pid {})", child.id());
        Ok(0)
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
fn report(ready: &mut Option<std::fs::File>, msg: &str) {
    if let Some(f) = ready.as_mut() {
        let _ = writeln!(f, "{msg}");
    }
    *ready = None;
}

fn vmm_process(state: &StateDir, name: &str) -> Result<i32> {
    let mut ready = std::env::var("VESSEL_READY_FD")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .map(|fd| {
            // SAFETY: `vessel start` passed this descriptor for us alone.
            unsafe { std::fs::File::from_raw_fd(fd) }
        });
    let vm = state.vm(name)?;
    crate::confinement::set_policy(&crate::confinement::ConfineArgs::default_on())?;
    // Before any thread starts (the API server's): the VM's event loop reads these signals.
    crate::api_mode::block_control_signals();
    let result = (|| -> Result<_> {
        let def = vm.definition()?;
        let lock = vm
            .try_lock()?
            .ok_or_else(|| anyhow!("VM '{name}' is already running"))?;
        let serial = vmm::SerialMode::Background {
            log: vm.path(state::SERIAL_LOG),
            socket: vm.path(state::CONSOLE_SOCKET),
        };
        let cfg = def.vm_config(serial)?;
        let machine =
            vmm::Vm::new(&cfg).map_err(|e| anyhow!("{}", crate::run_cli::error_chain(&e)))?;
        let api_server =
            crate::api_mode::serve_running(&vm.path(state::API_SOCKET), &cfg, machine.handle())
                .map_err(|e| {
                    anyhow!("cannot serve the API: {}", crate::run_cli::error_chain(&e))
                })?;
        Ok((lock, machine, api_server, cfg))
    })();
    let (_lock, machine, api_server, cfg) = match result {
        Ok(x) => x,
        Err(e) => {
            report(&mut ready, &format!("{e:#}"));
            return Err(e);
        }
    };
    let _ = std::fs::remove_file(vm.path(state::EXIT_FILE));
    std::fs::write(
        vm.path(state::PID_FILE),
        format!("{}\n", std::process::id()),
    )?;
    crate::confinement::lock_down(&cfg, &[vm.dir.as_path()])?;
    report(&mut ready, "ready");
    let outcome = machine.run();
    let _ = api_server.shutdown();
    let note = match &outcome {
        Ok(vmm::ExitReason::PowerOff) => "guest powered off".to_string(),
        Ok(vmm::ExitReason::Reset) => "guest reset".to_string(),
        Ok(vmm::ExitReason::TripleFault) => "guest triple-faulted".to_string(),
        Ok(vmm::ExitReason::Stopped) => "stopped by the host".to_string(),
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

fn signal(vm: &VmDir, sig: i32) -> Result<bool> {
    match vm.state()? {
        VmState::Running { pid } if pid > 0 => {
            // SAFETY: sending a signal to the VMM process that holds this VM's lock.
            Ok(unsafe { libc::kill(pid, sig) } == 0)
        }
        _ => Ok(false),
    }
}

fn stop(state: &StateDir, name: &str, force: bool, timeout: u64) -> Result<i32> {
    let vm = state.vm(name)?;
    vm.definition()?;
    if !matches!(vm.state()?, VmState::Running { .. }) {
        println!("VM '{name}' is not running");
        return Ok(0);
    }
    if !force
        && signal(&vm, libc::SIGUSR1)?
        && state::wait_for_exit(&vm, Duration::from_secs(timeout))?
    {
        println!(
            "VM '{name}' shut down ({})",
            vm.exit_note().unwrap_or_default()
        );
        return Ok(0);
    }
    if signal(&vm, libc::SIGTERM)? && state::wait_for_exit(&vm, Duration::from_secs(5))? {
        println!("VM '{name}' powered off");
        return Ok(0);
    }
    signal(&vm, libc::SIGKILL)?;
    state::wait_for_exit(&vm, Duration::from_secs(5))?;
    std::fs::write(vm.path(state::EXIT_FILE), "killed by vessel stop\n")?;
    println!("VM '{name}' killed");
    Ok(0)
}

struct Row {
    name: String,
    state: String,
    cpus: i64,
    memory: String,
    disks: usize,
    ports: String,
    uptime: Option<u64>,
}

fn row(vm: &VmDir) -> Result<Row> {
    let def = vm.definition()?;
    let st = vm.state()?;
    Ok(Row {
        name: vm.name.clone(),
        state: st.label().into(),
        cpus: *def.cpus.get_ref(),
        memory: def.memory.get_ref().clone(),
        disks: def.disks.len(),
        ports: def
            .forwards()
            .iter()
            .map(|(p, a, hp, gp)| format!("{a}:{hp}->{gp}/{p}"))
            .collect::<Vec<_>>()
            .join(","),
        uptime: matches!(st, VmState::Running { .. })
            .then(|| vm.uptime())
            .flatten(),
    })
}

fn human_duration(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

fn ls(state: &StateDir, json: bool) -> Result<i32> {
    let rows: Vec<Row> = state
        .list()?
        .iter()
        .map(|n| row(&state.vm(n)?))
        .collect::<Result<_>>()?;
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| serde_json::json!({"name": r.name, "state": r.state, "cpus": r.cpus, "memory": r.memory, "disks": r.disks, "ports": r.ports, "uptime_seconds": r.uptime}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header([
        "NAME", "STATE", "CPUS", "MEMORY", "DISKS", "PORTS", "UPTIME",
    ]);
    for r in rows {
        let up = r.uptime.map(human_duration).unwrap_or_else(|| "-".into());
        let ports = if r.ports.is_empty() {
            "-".into()
        } else {
            r.ports
        };
        table.add_row([
            r.name,
            r.state,
            r.cpus.to_string(),
            r.memory,
            r.disks.to_string(),
            ports,
            up,
        ]);
    }
    println!("{table}");
    Ok(0)
}

fn inspect(state: &StateDir, name: &str) -> Result<i32> {
    let vm = state.vm(name)?;
    let def = vm.definition()?;
    let st = vm.state()?;
    let v = serde_json::json!({
        "name": name,
        "state": st.label(),
        "pid": match st { VmState::Running { pid } => Some(pid), _ => None },
        "uptime_seconds": matches!(st, VmState::Running { .. }).then(|| vm.uptime()).flatten(),
        "directory": vm.dir,
        "serial_log": vm.path(state::SERIAL_LOG),
        "console_socket": vm.path(state::CONSOLE_SOCKET),
        "api_socket": vm.path(state::API_SOCKET),
        "last_exit": vm.exit_note(),
        "last_serial_lines": vm.last_serial_lines(10),
        "definition": serde_json::to_value(&def)?,
        "snapshots": crate::snapshot_cli::inspect_json(&vm),
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(0)
}

fn console(state: &StateDir, name: &str) -> Result<i32> {
    let vm = state.vm(name)?;
    vm.definition()?;
    if !matches!(vm.state()?, VmState::Running { .. }) {
        bail!("VM '{name}' is not running");
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
    if matches!(vm.state()?, VmState::Running { .. }) {
        bail!("VM '{name}' is running; stop it first");
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
