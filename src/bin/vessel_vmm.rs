//! vessel-vmm: the process that runs one VM. `vessel run` (without `--image`) and `vessel
//! start` execute it with their own arguments; it holds only what a running VM needs
//! (src/vmm_exe.rs says why).

use clap::{Parser, Subcommand};
use vessel::cli::GlobalArgs;
use vessel::{exit, manage_cli, run_cli};

#[derive(Debug, Parser)]
#[command(
    name = "vessel-vmm",
    version,
    about = "Runs one vessel VM (started by `vessel run` and `vessel start`)"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot a guest kernel in the foreground, console on stdio (`vessel run`).
    Run(Box<run_cli::RunArgs>),
    /// Run a defined VM of the state directory (what `vessel start` runs in the background).
    Vmm(manage_cli::VmmArgs),
}

fn main() {
    // One malloc arena for every thread: the VMM's threads allocate little, and each
    // further arena would keep pages of its own resident (docs/overhead.md).
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let cli = Cli::parse();
    cli.global.apply(matches!(cli.command, Command::Vmm(_)));
    let code = match cli.command {
        Command::Run(args) => run_cli::run(*args),
        Command::Vmm(args) => exit::finish(manage_cli::run_defined(cli.global.state_dir, args)),
    };
    std::process::exit(code);
}
