//! vessel: a virtual machine monitor on KVM.

mod api_balloon;
mod api_client;
mod api_devices;
mod api_forwards;
mod api_mode;
mod balloon_def;
mod cli_docs;
mod confinement;
mod disk_cli;
mod disk_formats;
mod exit;
mod fork_cli;
mod image_boot;
mod image_cli;
mod image_run;
mod image_vm;
mod incoming_cli;
mod inventory_cli;
mod jail_cli;
mod logging;
mod manage_cli;
mod memory_cli;
mod migrate_cli;
mod ova;
mod project_cli;
mod provision_cli;
mod provision_def;
mod run_cli;
mod share_def;
mod size;
mod snapshot_cli;
mod snapshot_merge;
mod snapshot_tree;
mod ssh_cli;
mod ssh_tunnel;
mod state;
mod suspend_cli;
mod vhost_user_cli;
mod vm_archive;
mod vm_create;
mod vm_forwards;
mod vm_list;
mod vm_ports;
mod vm_set;
mod vmdef;
mod vmdef_checks;
mod vmdef_rates;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "vessel", version, about = "A KVM virtual machine monitor")]
struct Cli {
    /// Where VMs live (default: $XDG_STATE_HOME/vessel, or ~/.local/state/vessel); for the
    /// commands that manage VMs.
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// The most verbose messages of the VMM written to stderr (a started VM's vmm.log).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogLevel::Info)]
    log_level: logging::LogLevel,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot a guest kernel in the foreground, console on stdio.
    Run(run_cli::RunArgs),
    /// Work with disk images (raw, qcow2, vdi, vhd, vmdk, vhdx).
    #[command(subcommand)]
    Disk(disk_cli::DiskCommand),
    #[command(flatten)]
    Manage(manage_cli::ManageCommand),
    /// Disk images VMs boot from: build, import, ls, rm.
    #[command(subcommand)]
    Image(image_cli::ImageCommand),
    /// Disk snapshots of powered-off VMs: take, ls, restore, rm.
    #[command(subcommand)]
    Snapshot(snapshot_cli::SnapshotCommand),
    /// Serve a disk to another VMM (QEMU...) as a vhost-user-blk backend.
    VhostUserBlk(vhost_user_cli::BlkArgs),
    /// Serve a network interface to another VMM (QEMU...) as a vhost-user-net backend.
    VhostUserNet(vhost_user_cli::NetArgs),
    /// List the VMs of every state directory vessel created VMs in (Vagrant's global-status).
    GlobalStatus(project_cli::GlobalStatusArgs),
    /// Print a shell completion script (e.g. `vessel completions bash > /etc/bash_completion.d/vessel`).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write man pages, one per command (vessel.1, vessel-run.1, vessel-disk-create.1...).
    Man {
        /// The directory to write them into (made when missing).
        dir: std::path::PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let uses_state_dir = matches!(
        cli.command,
        Command::Manage(_) | Command::Snapshot(_) | Command::Image(_)
    );
    if cli.state_dir.is_some() && !uses_state_dir {
        eprintln!("vessel: error: --state-dir is only for commands that manage VMs (create, start, ls, snapshot, image...)");
        std::process::exit(exit::USAGE);
    }
    logging::init(cli.log_level);
    let code = match cli.command {
        Command::Run(args) => run_cli::run(args),
        Command::VhostUserBlk(args) => vhost_user_cli::run_blk(args),
        Command::VhostUserNet(args) => vhost_user_cli::run_net(args),
        Command::Manage(cmd) => exit::finish(manage_cli::run(cli.state_dir, cmd)),
        Command::Snapshot(cmd) => exit::finish(snapshot_cli::run(cli.state_dir, cmd)),
        Command::Image(cmd) => exit::finish(image_cli::run(cli.state_dir, cmd)),
        Command::Disk(cmd) => exit::finish(disk_cli::run(cmd)),
        Command::GlobalStatus(args) => exit::finish(project_cli::global_status(args)),
        Command::Completions { shell } => exit::finish(cli_docs::completions(shell)),
        Command::Man { dir } => exit::finish(cli_docs::man(&dir)),
    };
    std::process::exit(code);
}
