//! `vessel-agent`: PID 1 of a vessel container microVM, started by its `/init` once the
//! vsock driver is loaded. Runs the one process the shim sends in `/rootfs` and powers the
//! VM off when the shim is done; processes the shim adds (Exec) run beside it (docs/kubernetes.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agent::{guest, session};

/// Where the container's root is in the guest (the shim's cpio puts it there).
const ROOT: &str = "/rootfs";
/// Where the roots of a pod's further containers go.
const POD_DIR: &str = "/containers";

fn main() -> ExitCode {
    let status = run();
    if std::process::id() == 1 {
        guest::power_off();
    }
    status
}

fn run() -> ExitCode {
    let stream = match guest::connect_host(Duration::from_secs(120)) {
        Ok(s) => s,
        Err(e) => {
            println!("vessel-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Each exec'd process connects on its own; the vsock driver is up by now.
    let connect: agent::exec::Connect = std::sync::Arc::new(|| {
        guest::connect_host(Duration::from_secs(10)).map_err(std::io::Error::other)
    });
    let places = session::Places {
        root: PathBuf::from(ROOT),
        pod_dir: PathBuf::from(POD_DIR),
        share: PathBuf::from(agent::protocol::VOLUMES_DIR),
        cgroup_root: PathBuf::from(agent::cgroup::ROOT),
    };
    match session::serve(stream, &places, guest::kernel_release(), connect) {
        Ok(status) => {
            println!("vessel-agent: the process exited with status {status}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("vessel-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
