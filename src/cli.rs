//! The `vessel` command tree (clap): every command, its arguments and help.

use clap::{Args, Parser, Subcommand};

use crate::{
    disk_cli, image_cli, logging, manage_cli, project_cli, run_cli, snapshot_cli, vhost_user_cli,
};

#[derive(Debug, Parser)]
#[command(name = "vessel", version, about = "A KVM virtual machine monitor")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The options of every command, `vessel`'s and `vessel-vmm`'s.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where VMs live (default: $XDG_STATE_HOME/vessel, or ~/.local/state/vessel); for the
    /// commands that manage VMs.
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// The most verbose messages of the VMM written to stderr (a started VM's vmm.log).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogLevel::Info)]
    pub log_level: logging::LogLevel,
}

impl GlobalArgs {
    /// Refuses `--state-dir` (exit 2) for a command that does not manage VMs, then starts
    /// the log.
    pub fn apply(&self, manages_vms: bool) {
        if self.state_dir.is_some() && !manages_vms {
            eprintln!("vessel: error: --state-dir is only for commands that manage VMs (create, start, ls, snapshot, image...)");
            std::process::exit(crate::exit::USAGE);
        }
        logging::init(self.log_level);
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
