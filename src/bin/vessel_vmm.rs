//! vessel-vmm: the process that runs one VM. `vessel run` (without `--image`) and `vessel
//! start` execute it with their own arguments; it holds only what a running VM needs
//! (src/vmm_exe.rs says why).

use clap::{Parser, Subcommand};
use vessel::{exit, logging, manage_cli, run_cli};

#[derive(Debug, Parser)]
#[command(
    name = "vessel-vmm",
    version,
    about = "Runs one vessel VM (started by `vessel run` and `vessel start`)"
)]
struct Cli {
    /// Where VMs live (for `vmm NAME`).
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
    if cli.state_dir.is_some() && matches!(cli.command, Command::Run(_)) {
        eprintln!("vessel: error: --state-dir is only for commands that manage VMs (create, start, ls, snapshot, image...)");
        std::process::exit(exit::USAGE);
    }
    logging::init(cli.log_level);
    let code = match cli.command {
        Command::Run(args) => run_cli::run(*args),
        Command::Vmm(args) => exit::finish(manage_cli::run_defined(cli.state_dir, args)),
    };
    std::process::exit(code);
}
