//! Live migration from the command line: `vessel run --incoming URL` (the receiver) and
//! the sender behind `PUT /migration/send` (docs/migration.md).

use std::io::BufReader;
use std::path::Path;

use vmm::migration::{self, Listener, MigrationUrl, SendOptions};
use vmm::{SerialMode, Vm, VmHandle};

use crate::run_cli::{error_chain, report_end, EXIT_HOST_ERROR, EXIT_USAGE};

/// The sender: migrates the VM of `handle` as the API request asks.
pub fn send(handle: &VmHandle, params: &api::MigrationSendParams) -> Result<(), String> {
    if params.destination_url.starts_with("ssh:") {
        return Err(
            "ssh: destinations are opened by `vessel migrate NAME --to ssh:…` (the VMM runs \
             no ssh); the API takes unix:PATH and tcp:HOST:PORT"
                .into(),
        );
    }
    let url: MigrationUrl = params
        .destination_url
        .parse()
        .map_err(|e: migration::MigrationError| e.to_string())?;
    let target = url.to_string();
    handle
        .migration()
        .send(SendOptions {
            url,
            max_downtime_ms: params.max_downtime_ms,
            bandwidth_mib_s: params.bandwidth_mib_s,
            copy_storage: params.copy_storage,
        })
        .map_err(|e| error_chain(&e))?;
    let p = handle.migration().progress();
    eprintln!(
        "vessel: VM migrated to {target}: {} rounds, {:.2} MiB of memory sent, {} ms paused, {} ms in all",
        p.rounds,
        p.sent_bytes as f64 / f64::from(1 << 20),
        p.downtime_ms.unwrap_or_default(),
        p.total_ms.unwrap_or_default()
    );
    Ok(())
}

/// `vessel run --incoming URL [--api-sock PATH]`: waits for one sender, builds its VM,
/// serves it on `api_sock`, confines the VMM, resumes the VM when the sender says so and
/// runs it to its end.
pub fn incoming(
    url: &str,
    serial: SerialMode,
    emulator_fixups: vmm::EmulatorFixups,
    api_sock: Option<&Path>,
) -> i32 {
    let url: MigrationUrl = match url.parse() {
        Ok(url) => url,
        Err(e) => {
            eprintln!("vessel: error: {e}");
            return EXIT_USAGE;
        }
    };
    let listener = match Listener::bind(&url) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vessel: error: {}", error_chain(&e));
            return EXIT_HOST_ERROR;
        }
    };
    eprintln!("vessel: waiting for a migration on {url}");
    let stream = match listener.accept() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vessel: error: accepting the migration on {url}: {e}");
            return EXIT_HOST_ERROR;
        }
    };
    drop(listener);
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    // The stream names the sender's paths: this receiver writes no disk (shared storage).
    let received = migration::receive(&mut reader, u64::MAX, migration::Storage::Shared);
    let mut stream = reader.into_inner();
    let fail = |stream: &mut migration::Stream, what: String| {
        migration::refuse(stream, &what);
        eprintln!("vessel: error: {what}");
        EXIT_HOST_ERROR
    };
    let received = match received {
        Ok(r) => r,
        Err(e) => return fail(&mut stream, error_chain(&e)),
    };
    let host = vmm::HostResources {
        serial,
        emulator_fixups,
        ..Default::default()
    };
    let mut vm = match Vm::restore_received(&host, &received) {
        Ok(vm) => vm,
        Err(e) => return fail(&mut stream, error_chain(&e)),
    };
    // The files the VM keeps using (its disks...) are the stream's.
    let files = vm.config().clone();
    drop(received);
    let api_server = match api_sock {
        Some(socket) => match crate::api_mode::serve_running(socket, &files, vm.handle()) {
            Ok(server) => Some(server),
            Err(e) => {
                return fail(
                    &mut stream,
                    format!("cannot serve the API: {}", error_chain(&e)),
                )
            }
        },
        None => None,
    };
    if let Err(e) = crate::confinement::lock_down(&files, &[]) {
        return fail(&mut stream, format!("{e:#}"));
    }
    if let Err(e) = migration::ready_and_wait_go(&mut stream) {
        eprintln!(
            "vessel: error: the sender did not hand the VM over: {}",
            error_chain(&e)
        );
        return EXIT_HOST_ERROR;
    }
    vm.on_started(Box::new(move || {
        if let Err(e) = migration::confirm_resumed(&mut stream) {
            tracing::warn!("telling the sender the VM runs here: {e}");
        }
    }));
    eprintln!("vessel: migration received; the VM runs here now");
    let outcome = vm.run();
    if let Some(server) = api_server {
        let _ = server.shutdown();
    }
    match outcome {
        Ok(reason) => report_end(&reason),
        Err(e) => {
            eprintln!("vessel: error: {}", error_chain(&e));
            EXIT_HOST_ERROR
        }
    }
}

/// `vessel migrate NAME --to URL`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The running VM.
    name: String,
    /// Where the receiver listens: unix:PATH, tcp:HOST:PORT (an IP address; trusted
    /// networks only), or ssh:[USER@]HOST[:PORT]:/PATH (through OpenSSH to the receiver's
    /// unix socket on that host; the safe way between hosts)
    #[arg(long)]
    to: String,
    /// An option for ssh, as `ssh -o` takes it (e.g. IdentityFile=~/.ssh/id_ed25519);
    /// repeatable; only with --to ssh:…
    #[arg(long = "ssh-option", value_name = "KEY=VALUE")]
    ssh_options: Vec<String>,
    /// The pause the guest may see, in ms.
    #[arg(long, default_value_t = 300)]
    max_downtime_ms: u64,
    /// At most this many MiB/s of guest memory and disk data.
    #[arg(long)]
    bandwidth_mib_s: Option<u64>,
    /// Stream the disks too, for hosts without shared storage: the receiver must be
    /// waiting with `vessel start NAME --incoming URL --copy-storage`.
    #[arg(long)]
    copy_storage: bool,
}

/// Asks the VM's VMM (over its API socket) to migrate, showing progress until it is done.
pub fn migrate(state: &crate::state::StateDir, args: MigrateArgs) -> anyhow::Result<i32> {
    use crate::api_client::{api_call_waiting, fault};
    use std::time::Duration;
    let vm = state.vm(&args.name)?;
    if !matches!(vm.state()?, crate::state::VmState::Running { .. }) {
        return Err(crate::exit::usage(format!(
            "VM '{}' is not running",
            args.name
        )));
    }
    let tunnel = if args.to.starts_with("ssh:") {
        let target: crate::ssh_tunnel::SshTarget = args
            .to
            .parse()
            .map_err(|e: crate::ssh_tunnel::TunnelError| crate::exit::usage(e.to_string()))?;
        let local = vm.path("migration-ssh.sock");
        Some(crate::ssh_tunnel::SshTunnel::open(
            &target,
            &local,
            &args.ssh_options,
        )?)
    } else if !args.ssh_options.is_empty() {
        return Err(crate::exit::usage(
            "--ssh-option is for --to ssh:… destinations",
        ));
    } else {
        if let Err(e) = args.to.parse::<MigrationUrl>() {
            return Err(crate::exit::usage(e.to_string()));
        }
        None
    };
    let destination = tunnel.as_ref().map_or_else(|| args.to.clone(), |t| t.url());
    let socket = vm.path(crate::state::API_SOCKET);
    let mut body = serde_json::json!({
        "destination_url": destination,
        "max_downtime_ms": args.max_downtime_ms,
    });
    if let Some(rate) = args.bandwidth_mib_s {
        body["bandwidth_mib_s"] = rate.into();
    }
    if args.copy_storage {
        body["copy_storage"] = true.into();
    }
    let send_socket = socket.clone();
    let sending = std::thread::spawn(move || {
        api_call_waiting(
            &send_socket,
            "PUT",
            "/migration/send",
            Some(&body),
            Duration::from_secs(24 * 3600),
        )
    });
    while !sending.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        if let Ok((200, status)) =
            api_call_waiting(&socket, "GET", "/migration", None, Duration::from_secs(5))
        {
            let p: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
            eprint!("\r{}   ", progress_line(&args.name, &p));
        }
    }
    eprintln!();
    let (status, reply) = sending
        .join()
        .map_err(|_| anyhow::anyhow!("the migration request failed"))??;
    if status != 204 {
        anyhow::bail!("migration failed: {}", fault(&reply));
    }
    eprintln!("vessel: VM '{}' migrated to {}", args.name, args.to);
    Ok(0)
}

/// One line of a migration's progress from `GET /migration`: memory, and the disks when
/// they are copied too.
fn progress_line(name: &str, p: &serde_json::Value) -> String {
    let mib = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as f64 / f64::from(1 << 20);
    let mut line = format!(
        "vessel: migrating '{name}': {} round {}, {:.1} MiB sent, {} pages dirty, ~{} ms pause",
        p["state"].as_str().unwrap_or("?"),
        p["rounds"],
        mib(&p["sent_bytes"]),
        p["dirty_pages"],
        p["expected_downtime_ms"],
    );
    if p["disk_sent_bytes"].is_u64() {
        line.push_str(&format!(
            "; disks {:.1} MiB sent, {:.1} MiB dirty",
            mib(&p["disk_sent_bytes"]),
            mib(&p["dirty_disk_bytes"]),
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::progress_line;

    #[test]
    fn the_progress_line_shows_the_disks_only_when_they_are_copied() {
        let memory = serde_json::json!({"state": "sending", "rounds": 1,
            "sent_bytes": 3 << 20, "dirty_pages": 7, "expected_downtime_ms": 12});
        let line = progress_line("vm", &memory);
        assert_eq!(
            line,
            "vessel: migrating 'vm': sending round 1, 3.0 MiB sent, 7 pages dirty, ~12 ms pause"
        );
        let mut both = memory.clone();
        both["disk_sent_bytes"] = (5u64 << 20).into();
        both["dirty_disk_bytes"] = (1u64 << 19).into();
        assert!(progress_line("vm", &both).ends_with("; disks 5.0 MiB sent, 0.5 MiB dirty"));
    }
}
