//! vessel: a virtual machine monitor on KVM.

use clap::Parser;
use vessel::cli::{Cli, Command};
use vessel::{
    cli_docs, disk_cli, exit, image_cli, manage_cli, project_cli, run_cli, snapshot_cli,
    vhost_user_cli, vmm_exe,
};

fn main() {
    let cli = Cli::parse();
    let manages_vms = matches!(
        cli.command,
        Command::Manage(_) | Command::Snapshot(_) | Command::Image(_)
    );
    cli.global.apply(manages_vms);
    let code = match cli.command {
        Command::Run(args) if args.uses_image() => run_cli::run_image(args),
        Command::Run(_) | Command::Manage(manage_cli::ManageCommand::Vmm(_)) => exec_vmm(),
        Command::VhostUserBlk(args) => vhost_user_cli::run_blk(args),
        Command::VhostUserNet(args) => vhost_user_cli::run_net(args),
        Command::Manage(cmd) => exit::finish(manage_cli::run(cli.global.state_dir, cmd)),
        Command::Snapshot(cmd) => exit::finish(snapshot_cli::run(cli.global.state_dir, cmd)),
        Command::Image(cmd) => exit::finish(image_cli::run(cli.global.state_dir, cmd)),
        Command::Disk(cmd) => exit::finish(disk_cli::run(cmd)),
        Command::GlobalStatus(args) => exit::finish(project_cli::global_status(args)),
        Command::Completions { shell } => exit::finish(cli_docs::completions(shell)),
        Command::Man { dir } => exit::finish(cli_docs::man(&dir)),
    };
    std::process::exit(code);
}

/// Hands a VM to `vessel-vmm` (same arguments, same process); returns only on failure.
fn exec_vmm() -> i32 {
    let e = vmm_exe::exec_with_own_args();
    eprintln!("vessel: error: {e:#}");
    exit::HOST_ERROR
}
