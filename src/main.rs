//! vessel: a virtual machine monitor on KVM.

mod disk_cli;
mod run_cli;
mod size;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "vessel", version, about = "A KVM virtual machine monitor")]
struct Cli {
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
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run(args) => run_cli::run(args),
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
