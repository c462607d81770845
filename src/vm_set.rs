//! `vessel set NAME --cpus 4 --memory 2G --nic … --forward … --disk …`: change a stopped
//! VM's definition (VBoxManage modifyvm, multipass set), with create's flags and checks.

use anyhow::Result;
use clap::Args;

use crate::exit::usage;
use crate::state::{self, StateDir};
use crate::vm_create::VmFlags;

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The stopped VM to change.
    name: String,
    #[command(flatten)]
    vm: VmFlags,
    /// Print the VM's summary as JSON afterwards (the fields of `vessel ls --json`).
    #[arg(long)]
    json: bool,
}

pub fn set(state: &StateDir, args: SetArgs) -> Result<i32> {
    let vm = state.vm(&args.name)?;
    let mut def = vm.definition()?;
    // Held until vm.toml is rewritten: `vessel start` cannot read a half-changed VM.
    let Some(_lock) = vm.try_lock()? else {
        return Err(usage(format!(
            "VM '{}' is running; stop it first (vessel stop {})",
            args.name, args.name
        )));
    };
    if !args.vm.changes_something() {
        return Err(usage(
            "nothing to change: give --cpus, --memory, --nic, --forward, --disk...",
        ));
    }
    args.vm.apply(&mut def, &vm)?;
    let def = crate::vm_create::recheck(&def, &vm)?;
    crate::vm_create::create_sized_disks(&def)?;
    crate::snapshot_tree::write_atomic(
        &vm.path(state::DEFINITION),
        toml::to_string_pretty(&def)?.as_bytes(),
    )?;
    if args.json {
        crate::vm_list::print_summary(&vm)?;
    } else {
        println!("updated VM '{}'", args.name);
    }
    Ok(0)
}
