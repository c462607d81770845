//! vessel: a virtual machine monitor on KVM.

mod disk_cli;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "vessel", version, about = "A KVM virtual machine monitor")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with disk images (raw, qcow2, vdi, vhd, vmdk, vhdx).
    #[command(subcommand)]
    Disk(disk_cli::DiskCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Disk(cmd) => disk_cli::run(cmd),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("vessel: error: {e:#}");
            std::process::exit(1);
        }
    }
}
