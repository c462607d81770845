//! vessel: a virtual machine monitor on KVM.

mod api_mode;
mod confinement;
mod disk_cli;
mod disk_formats;
mod image_boot;
mod image_cli;
mod image_run;
mod image_vm;
mod jail_cli;
mod logging;
mod manage_cli;
mod run_cli;
mod size;
mod snapshot_cli;
mod snapshot_merge;
mod snapshot_tree;
mod ssh_cli;
mod state;
mod vhost_user_cli;
mod vm_archive;
mod vmdef;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "vessel", version, about = "A KVM virtual machine monitor")]
struct Cli {
    /// Where VMs live (default: $XDG_STATE_HOME/vessel, or ~/.local/state/vessel).
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
}

fn main() {
    let cli = Cli::parse();
    logging::init(cli.log_level);
    let code = match cli.command {
        Command::Run(args) => run_cli::run(args),
        Command::VhostUserBlk(args) => vhost_user_cli::run_blk(args),
        Command::VhostUserNet(args) => vhost_user_cli::run_net(args),
        Command::Manage(cmd) => match manage_cli::run(cli.state_dir, cmd) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("vessel: error: {e:#}");
                1
            }
        },
        Command::Snapshot(cmd) => match snapshot_cli::run(cli.state_dir, cmd) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("vessel: error: {e:#}");
                1
            }
        },
        Command::Image(cmd) => match image_cli::run(cli.state_dir, cmd) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("vessel: error: {e:#}");
                1
            }
        },
        Command::Disk(cmd) => match disk_cli::run(cmd) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("vessel: error: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}
