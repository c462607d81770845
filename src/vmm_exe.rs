//! `vessel-vmm`, the executable that runs one VM. `vessel run` and `vessel start` hand the
//! VM to it, so the process that faces the guest for the VM's whole life holds the VMM's
//! code and not the rest of the CLI (images, archives, provisioning): less code mapped,
//! about 2 MiB less resident memory per VM (docs/overhead.md).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

/// The executable's file name; it is installed next to `vessel`.
pub const NAME: &str = "vessel-vmm";

/// `vessel-vmm` next to this executable.
pub fn path() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the vessel executable")?;
    let vmm = exe.with_file_name(NAME);
    if !vmm.is_file() {
        bail!(
            "{} is missing: vessel runs VMs with the {NAME} executable installed next to it",
            vmm.display()
        );
    }
    Ok(vmm)
}

/// Replaces this process with `vessel-vmm`, given this process's own arguments (its
/// command line accepts `run` and `vmm` as `vessel`'s does). Returns only on failure.
pub fn exec_with_own_args() -> anyhow::Error {
    let vmm = match path() {
        Ok(vmm) => vmm,
        Err(e) => return e,
    };
    let err = Command::new(&vmm).args(std::env::args_os().skip(1)).exec();
    anyhow!(err).context(format!("cannot run {}", vmm.display()))
}
