//! `vessel-agent`: PID 1 of a vessel container microVM, started by its `/init` once the
//! vsock driver is loaded. Runs the one process the shim sends in `/rootfs` and powers the
//! VM off when the shim is done (docs/kubernetes.md).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use agent::{guest, session};

/// Where the container's root is in the guest (the shim's cpio puts it there).
const ROOT: &str = "/rootfs";

fn main() -> ExitCode {
    let status = run();
    if std::process::id() == 1 {
        guest::power_off();
    }
    status
}

fn run() -> ExitCode {
    let root = Path::new(ROOT);
    let stream = match guest::connect_host(Duration::from_secs(120)) {
        Ok(s) => s,
        Err(e) => {
            println!("vessel-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    match session::serve(stream, root, guest::kernel_release()) {
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
