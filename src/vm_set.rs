//! `vessel set NAME --cpus 4 --memory 2G --nic … --forward … --disk …`: change a stopped
//! VM's definition (VBoxManage modifyvm, multipass set), with create's flags and checks.
//! A running VM takes only `--forward` and `--remove-forward` (VBoxManage controlvm
//! natpf): live on its nat NIC and in its definition ([`crate::vm_forwards`]).

use anyhow::Result;
use clap::Args;

use crate::exit::usage;
use crate::state::{self, StateDir, VmDir, VmState};
use crate::vm_create::VmFlags;
use crate::vmdef::VmDefinition;

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The VM to change (a running VM takes only --forward and --remove-forward).
    name: String,
    #[command(flatten)]
    vm: VmFlags,
    /// Stop forwarding this host port (repeatable). On a running VM only forwards added
    /// while it runs can be removed; those given at start stay until it stops.
    #[arg(long = "remove-forward", value_name = "HOST_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    remove_forwards: Vec<u16>,
    /// Print the VM's summary as JSON afterwards (the fields of `vessel ls --json`).
    #[arg(long)]
    json: bool,
}

pub fn set(state: &StateDir, args: SetArgs) -> Result<i32> {
    let vm = state.vm(&args.name)?;
    let mut def = vm.definition()?;
    if !args.vm.changes_something() && args.remove_forwards.is_empty() {
        return Err(usage(
            "nothing to change: give --cpus, --memory, --nic, --forward, --remove-forward, --disk...",
        ));
    }
    // Held until vm.toml is rewritten: `vessel start` cannot read a half-changed VM.
    let Some(_lock) = vm.try_lock()? else {
        return set_running(&vm, &mut def, &args);
    };
    crate::suspend_cli::refuse_if_suspended(&vm, "changing its definition")?;
    for &port in &args.remove_forwards {
        if crate::vm_forwards::remove_from(&mut def, port).is_none() {
            return Err(usage(format!(
                "VM '{}' forwards no host port {port}",
                args.name
            )));
        }
    }
    args.vm.apply(&mut def, &vm)?;
    let def = crate::vm_create::recheck(&def, &vm)?;
    crate::vm_create::create_sized_disks(&def)?;
    write(&vm, &def)?;
    finish(&vm, &args)
}

/// A running VM: forwards change live; anything else is refused.
fn set_running(vm: &VmDir, def: &mut VmDefinition, args: &SetArgs) -> Result<i32> {
    let stop_first = || {
        usage(format!(
            "VM '{}' is running: only --forward and --remove-forward change a running VM; stop it first (vessel stop {})",
            args.name, args.name
        ))
    };
    if args.vm.changes_more_than_forwards() {
        return Err(stop_first());
    }
    if !matches!(vm.state()?, VmState::Running { .. }) {
        return Err(stop_first());
    }
    for &port in &args.remove_forwards {
        crate::vm_forwards::remove_live(vm, def, port)?;
        write(vm, def)?;
    }
    let specs = args.vm.forward_specs();
    if !specs.is_empty() {
        let result = crate::vm_forwards::add_live(vm, def, specs);
        // The forwards added before a refusal are live: vm.toml keeps them too.
        write(vm, def)?;
        result?;
    }
    finish(vm, args)
}

fn write(vm: &VmDir, def: &VmDefinition) -> Result<()> {
    crate::snapshot_tree::write_atomic(
        &vm.path(state::DEFINITION),
        toml::to_string_pretty(def)?.as_bytes(),
    )
}

fn finish(vm: &VmDir, args: &SetArgs) -> Result<i32> {
    if args.json {
        crate::vm_list::print_summary(vm)?;
    } else {
        println!("updated VM '{}'", args.name);
    }
    Ok(0)
}
